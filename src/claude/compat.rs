//! Which Claude Code releases this launcher is tested against, and where the installed one
//! stands: users auto-update, so `doctor` must say plainly when claude is newer than anything
//! tested, and whether routing is still sound for it.

use super::grammar::Grammar;

/// The compatibility matrix, oldest supported first, newest checked last. The whole-program
/// tests run against each of these (tests/install-tools.sh installs them; keep the two in step).
pub const TESTED_RELEASES: &[&str] = &["2.1.197", "2.1.332"];

/// Where an installed release stands against [`TESTED_RELEASES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Within the tested range.
    Tested,
    /// Newer than the newest tested release.
    Newer,
    /// Older than the oldest supported release.
    Older,
    /// `claude --version` gave nothing we can compare.
    Unknown,
}

/// One finding for `doctor`: the standing and the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub standing: Standing,
    pub message: String,
}

impl Finding {
    /// True when the user should look (older than supported, or version unknown).
    pub fn is_warning(&self) -> bool {
        matches!(self.standing, Standing::Older | Standing::Unknown)
    }
}

/// The tested range as text (`2.1.197–2.1.332`).
pub fn tested_range() -> String {
    format!(
        "{}–{}",
        TESTED_RELEASES.first().copied().unwrap_or("?"),
        TESTED_RELEASES.last().copied().unwrap_or("?")
    )
}

/// Compares `version` (`claude --version`'s first word) with the tested range; `grammar` is the
/// routing learned from that binary, if any, which is what keeps an untested release working.
pub fn check(version: &str, grammar: Option<&Grammar>) -> Finding {
    let range = tested_range();
    let (Some(v), Some(oldest), Some(newest)) = (
        parse(version),
        TESTED_RELEASES.first().and_then(|v| parse(v)),
        TESTED_RELEASES.last().and_then(|v| parse(v)),
    ) else {
        return Finding {
            standing: Standing::Unknown,
            message: format!("version {version:?} not recognised; tested releases {range}"),
        };
    };
    let routing = match grammar {
        Some(g) if !g.usable => "its --help could not be read, so the built-in table of 2.1.197 \
                                 tells sessions from subcommands"
            .to_string(),
        Some(g) if g.hidden_scan_done => format!(
            "sessions and claude's own subcommands are told apart from what this binary accepts \
             ({} subcommands learned from it, {} of them hidden from its --help)",
            g.subcommands.len(),
            g.hidden.len()
        ),
        Some(g) => format!(
            "sessions and claude's own subcommands are told apart from this binary's --help ({} \
             subcommands); the scan for hidden ones is still running in the background",
            g.subcommands.len()
        ),
        None => "routing is learned from this binary on its first run through claude-telemetry \
                 (until then the built-in table of 2.1.197 applies)"
            .to_string(),
    };
    if v > newest {
        Finding {
            standing: Standing::Newer,
            message: format!(
                "{version} is newer than any tested release ({range}). It still works: {routing}"
            ),
        }
    } else if v < oldest {
        Finding {
            standing: Standing::Older,
            message: format!(
                "{version} is older than the oldest supported release ({range}); update Claude Code"
            ),
        }
    } else {
        Finding {
            standing: Standing::Tested,
            message: format!("{version} is within the tested range ({range}); {routing}"),
        }
    }
}

/// The finding for the claude at `program`, whose `claude --version` printed `version_output`,
/// using the grammar cached for that binary in `cache_dir` (for `doctor`).
pub fn installed(
    program: &std::path::Path,
    version_output: &str,
    cache_dir: &std::path::Path,
) -> Finding {
    let version = version_output.split_whitespace().next().unwrap_or("");
    let grammar = super::grammar::cached(program, cache_dir);
    check(version, grammar.as_ref())
}

fn parse(version: &str) -> Option<Vec<u64>> {
    let core = version.split(['-', '+', ' ']).next()?;
    core.split('.').map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_in_order_and_the_range_names_both_ends() {
        let parsed: Vec<_> = TESTED_RELEASES.iter().map(|v| parse(v).unwrap()).collect();
        assert!(parsed.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(tested_range(), "2.1.197–2.1.332");
    }

    #[test]
    fn newer_older_and_tested_releases_are_told_apart() {
        assert_eq!(check("2.1.197", None).standing, Standing::Tested);
        assert_eq!(check("2.1.250", None).standing, Standing::Tested);
        let newer = check("2.1.400", None);
        assert_eq!(newer.standing, Standing::Newer);
        assert!(
            newer.message.contains("newer than any tested release"),
            "{}",
            newer.message
        );
        assert!(newer.message.contains("still works"), "{}", newer.message);
        // Numeric, not text, order: 2.1.1000 is newer than 2.1.332.
        assert_eq!(check("2.1.1000", None).standing, Standing::Newer);
        assert_eq!(check("2.0.99", None).standing, Standing::Older);
        assert!(check("2.0.99", None).is_warning());
        assert_eq!(check("(unknown version)", None).standing, Standing::Unknown);
    }
}
