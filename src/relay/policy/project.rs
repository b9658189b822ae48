//! The project a launch works on: repository name and branch, read from the `.git` files
//! directly (no `git` process: this runs on the launch path and must cost microseconds).
//!
//! - Name: the last path segment of `remote "origin"`'s URL without `.git`
//!   (`git@host:team/api.git` → `api`); without an origin, the working tree's top-level
//!   directory name; outside a repository, the current directory's name. Only that segment is
//!   kept, so credentials in a URL never leave the machine.
//! - Branch: `ref: refs/heads/<branch>` in `HEAD`; `None` when detached.
//! - Worktrees and submodules (`.git` is a file `gitdir: <path>`) are followed; a worktree's
//!   config lives in the directory named by its `commondir` file.

use std::fs;
use std::path::{Path, PathBuf};

/// What `[resource]` may stamp about the project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectInfo {
    /// Repository (or directory) name.
    pub name: Option<String>,
    /// Checked-out branch.
    pub branch: Option<String>,
}

/// Detects the project from `cwd`, walking up to the nearest `.git`.
pub fn detect_project(cwd: &Path) -> ProjectInfo {
    match find_git_dir(cwd) {
        Some((top, git_dir)) => {
            let common = common_dir(&git_dir);
            let name = fs::read_to_string(common.join("config"))
                .ok()
                .and_then(|config| origin_url(&config))
                .and_then(|url| repo_name_from_url(&url))
                .or_else(|| dir_name(&top));
            let branch = fs::read_to_string(git_dir.join("HEAD"))
                .ok()
                .and_then(|head| branch_from_head(&head));
            ProjectInfo { name, branch }
        }
        None => ProjectInfo {
            name: dir_name(cwd),
            branch: None,
        },
    }
}

fn dir_name(path: &Path) -> Option<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
}

/// The working tree's top level and its git directory.
fn find_git_dir(start: &Path) -> Option<(PathBuf, PathBuf)> {
    for dir in start.ancestors() {
        let dot_git = dir.join(".git");
        let Ok(meta) = fs::metadata(&dot_git) else {
            continue;
        };
        if meta.is_dir() {
            return Some((dir.to_path_buf(), dot_git));
        }
        if meta.is_file() {
            let text = fs::read_to_string(&dot_git).ok()?;
            let target = text.trim().strip_prefix("gitdir:")?.trim();
            return Some((dir.to_path_buf(), dir.join(target)));
        }
    }
    None
}

fn common_dir(git_dir: &Path) -> PathBuf {
    match fs::read_to_string(git_dir.join("commondir")) {
        Ok(rel) => git_dir.join(rel.trim()),
        Err(_) => git_dir.to_path_buf(),
    }
}

/// The `url` of `[remote "origin"]` in a git config file.
fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    for raw in config.lines() {
        let line = raw.trim();
        if line.starts_with('[') {
            let header: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            in_origin = header.to_ascii_lowercase().starts_with("[remote")
                && header.ends_with("\"origin\"]");
            continue;
        }
        if !in_origin {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim().eq_ignore_ascii_case("url")
        {
            let value = value.trim().trim_matches('"');
            return Some(value.to_string());
        }
    }
    None
}

/// `https://host/team/api.git`, `git@host:team/api`, `/srv/git/api.git/` → `api`.
fn repo_name_from_url(url: &str) -> Option<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':', '\\']).next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty()).then(|| name.to_string())
}

fn branch_from_head(head: &str) -> Option<String> {
    let name = head.trim().strip_prefix("ref:")?.trim();
    let branch = name.strip_prefix("refs/heads/").unwrap_or(name);
    (!branch.is_empty()).then(|| branch.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }

    #[test]
    fn origin_repository_name_and_branch_are_read_from_a_subdirectory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let top = tmp.path().join("checkout");
        write(
            &top.join(".git/config"),
            "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = https://h/x/other.git\n\
             [remote \"origin\"]\n\turl = git@github.com:acme/billing-api.git\n\tfetch = +refs/heads/*\n",
        );
        write(
            &top.join(".git/HEAD"),
            "ref: refs/heads/feature/rate-limits\n",
        );
        let sub = top.join("src/deep");
        fs::create_dir_all(&sub).expect("mkdir");
        let info = detect_project(&sub);
        assert_eq!(info.name.as_deref(), Some("billing-api"));
        assert_eq!(info.branch.as_deref(), Some("feature/rate-limits"));
    }

    #[test]
    fn without_origin_the_top_level_directory_names_the_project() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let top = tmp.path().join("scratchpad");
        write(&top.join(".git/config"), "[core]\n\tbare = false\n");
        write(
            &top.join(".git/HEAD"),
            "0123456789abcdef0123456789abcdef01234567\n",
        );
        let info = detect_project(&top);
        assert_eq!(info.name.as_deref(), Some("scratchpad"));
        assert_eq!(info.branch, None, "detached HEAD has no branch");
    }

    #[test]
    fn outside_a_repository_the_directory_name_is_used() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("notes");
        fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(
            detect_project(&dir),
            ProjectInfo {
                name: Some("notes".into()),
                branch: None
            }
        );
    }

    #[test]
    fn worktree_gitdir_file_is_followed_to_the_common_config() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let main = tmp.path().join("main");
        write(
            &main.join(".git/config"),
            "[remote \"origin\"]\n\turl = https://user:tok@example.com/acme/web.git/\n",
        );
        write(
            &main.join(".git/worktrees/wt/HEAD"),
            "ref: refs/heads/hotfix\n",
        );
        write(&main.join(".git/worktrees/wt/commondir"), "../..\n");
        let wt = tmp.path().join("wt");
        write(
            &wt.join(".git"),
            &format!("gitdir: {}\n", main.join(".git/worktrees/wt").display()),
        );
        let info = detect_project(&wt);
        assert_eq!(info.name.as_deref(), Some("web"));
        assert_eq!(info.branch.as_deref(), Some("hotfix"));
    }

    #[test]
    fn url_forms_give_the_repository_name() {
        for (url, name) in [
            ("https://github.com/acme/api.git", "api"),
            ("git@github.com:acme/api", "api"),
            ("ssh://git@host:22/acme/api.git/", "api"),
            ("/srv/git/api.git", "api"),
            ("git@host:api.git", "api"),
        ] {
            assert_eq!(repo_name_from_url(url).as_deref(), Some(name), "{url}");
        }
    }
}
