//! `[budget]`: spending limits in USD per calendar day, week (Monday to Sunday) and month, in
//! the machine's local time zone.
//!
//! A limit can come from the user file, a project's `.claude-telemetry.toml` (then only that
//! project's spend counts against it), the environment (`CLAUDE_TELEMETRY_BUDGET__DAILY`) or a
//! flag, and from the administrator's managed policy (a team budget): there it is a ceiling, a
//! user or project may set a lower limit but not a higher one (said, never silently ignored).

use serde::{Deserialize, Serialize};

use super::policy::{LooseningAttempt, PolicyIssue};

/// The `[budget]` table of a settings file (and of the managed policy file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSettings {
    /// Most USD to spend in one local calendar day; unset: no daily budget.
    pub daily: Option<f64>,
    /// Most USD to spend in one local calendar week (Monday 00:00 to Sunday 24:00).
    pub weekly: Option<f64>,
    /// Most USD to spend in one local calendar month.
    pub monthly: Option<f64>,
}

/// The three periods with their dotted keys, in display order.
pub const BUDGET_KEYS: [&str; 3] = ["budget.daily", "budget.weekly", "budget.monthly"];

impl BudgetSettings {
    /// The limits in [`BUDGET_KEYS`] order.
    pub fn limits(&self) -> [Option<f64>; 3] {
        [self.daily, self.weekly, self.monthly]
    }

    fn limit_mut(&mut self, index: usize) -> &mut Option<f64> {
        match index {
            0 => &mut self.daily,
            1 => &mut self.weekly,
            _ => &mut self.monthly,
        }
    }

    /// A limit must be a finite amount above zero: `0`, a negative or `nan`/`inf` would make
    /// every launch "over budget" or none, which is never what was meant.
    pub fn validate(&self) -> Vec<PolicyIssue> {
        BUDGET_KEYS
            .iter()
            .zip(self.limits())
            .filter_map(|(key, limit)| {
                let value = limit?;
                (!value.is_finite() || value <= 0.0).then(|| PolicyIssue {
                    key: (*key).to_string(),
                    message: format!(
                        "`{value}` is not a budget: give an amount in USD above 0 (e.g. 10 or \
                         12.5), or remove the key for no limit"
                    ),
                })
            })
            .collect()
    }

    /// The dotted keys a managed `[budget]` sets (each one a team ceiling).
    pub fn set_keys(&self) -> Vec<String> {
        BUDGET_KEYS
            .iter()
            .zip(self.limits())
            .filter(|(_, limit)| limit.is_some())
            .map(|(key, _)| (*key).to_string())
            .collect()
    }
}

/// Applies the managed (team) budget as a ceiling over the user's effective budget: the lower
/// limit wins, a higher user or project limit is reported as a loosening attempt. Returns the
/// effective budget, the attempts, and for each period whether the managed value is the one in
/// force.
pub fn merge_managed_budget(
    managed: &BudgetSettings,
    user: &BudgetSettings,
) -> (BudgetSettings, Vec<LooseningAttempt>, [bool; 3]) {
    let mut effective = *user;
    let mut loosening = Vec::new();
    let mut from_managed = [false; 3];
    for (i, key) in BUDGET_KEYS.iter().enumerate() {
        let Some(ceiling) = managed.limits()[i] else {
            continue;
        };
        match user.limits()[i] {
            Some(own) if own <= ceiling => {}
            Some(own) => {
                loosening.push(LooseningAttempt {
                    key: (*key).to_string(),
                    wanted: own.to_string(),
                    locked: ceiling.to_string(),
                });
                *effective.limit_mut(i) = Some(ceiling);
                from_managed[i] = true;
            }
            None => {
                *effective.limit_mut(i) = Some(ceiling);
                from_managed[i] = true;
            }
        }
    }
    (effective, loosening, from_managed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_negative_and_infinite_budgets_are_refused_by_key() {
        let b = BudgetSettings {
            daily: Some(0.0),
            weekly: Some(-3.0),
            monthly: Some(f64::INFINITY),
        };
        let keys: Vec<_> = b.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, BUDGET_KEYS.to_vec());
        assert!(
            BudgetSettings {
                daily: Some(0.01),
                ..Default::default()
            }
            .validate()
            .is_empty()
        );
    }

    #[test]
    fn a_team_budget_is_a_ceiling_users_may_only_lower() {
        let managed = BudgetSettings {
            daily: Some(20.0),
            weekly: Some(100.0),
            monthly: None,
        };
        let user = BudgetSettings {
            daily: Some(10.0),
            weekly: Some(150.0),
            monthly: Some(300.0),
        };
        let (eff, loosening, from_managed) = merge_managed_budget(&managed, &user);
        assert_eq!(eff.daily, Some(10.0), "a lower own limit applies");
        assert_eq!(eff.weekly, Some(100.0), "a higher own limit does not");
        assert_eq!(eff.monthly, Some(300.0), "no team limit: the user's");
        assert_eq!(from_managed, [false, true, false]);
        assert_eq!(loosening.len(), 1);
        assert_eq!(loosening[0].key, "budget.weekly");
        assert_eq!(loosening[0].wanted, "150");
        assert_eq!(loosening[0].locked, "100");
        let (eff, loosening, from_managed) =
            merge_managed_budget(&managed, &BudgetSettings::default());
        assert_eq!(eff.daily, Some(20.0));
        assert!(loosening.is_empty(), "an unset key is not a loosening");
        assert_eq!(from_managed, [true, true, false]);
    }
}
