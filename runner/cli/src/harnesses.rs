//! Refusing, at Prepare, a pipeline whose SDK harness is not installed on
//! this host: a PROCESS environment's boot command that is missing would
//! otherwise fail only when the first worker starts, after staging and
//! with a less helpful message.

use std::path::{Path, PathBuf};

use ferrobeam_graph::plan::{Environment, Plan};
use ferrobeam_graph::urns::ENV_PROCESS;

/// Checks every PROCESS environment's command exists and is executable.
pub fn check_process_commands(plan: &Plan) -> Result<(), String> {
    let mut ids: Vec<&String> = plan.environments.keys().collect();
    ids.sort();
    for id in ids {
        if let Environment::Process { command, .. } = &plan.environments[id] {
            if let Err(problem) = find_executable(command) {
                return Err(format!(
                    "environment '{id}' ({ENV_PROCESS}) starts its SDK workers with {command:?}, \
                     which {problem} on the job server's host. {}",
                    install_hint(command)
                ));
            }
        }
    }
    Ok(())
}

/// Where `command` is: a path (with a `/`) as given, else on `PATH`.
fn find_executable(command: &str) -> Result<PathBuf, String> {
    if command.contains('/') {
        let path = PathBuf::from(command);
        return if is_executable(&path) {
            Ok(path)
        } else if path.exists() {
            Err("is not an executable file".into())
        } else {
            Err("does not exist".into())
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(command))
        .find(|p| is_executable(p))
        .ok_or_else(|| "is not on the PATH".into())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The command that would install the harness, where we know it.
fn install_hint(command: &str) -> String {
    let name = Path::new(command)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "boot" {
        format!(
            "For Beam's Go SDK, build Beam's boot program there: \
             `go build -o {command} github.com/apache/beam/sdks/v2/go/container` (in the \
             pipeline's Go module, so that its Beam version matches)."
        )
    } else {
        "Install it there, or point the environment's command (--environment_config) at the \
         harness's boot program."
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_commands_on_the_path_and_by_path() {
        assert!(find_executable("sh").is_ok());
        assert!(find_executable("/bin/sh").is_ok());
        assert_eq!(
            find_executable("/no/such/boot").unwrap_err(),
            "does not exist"
        );
        assert_eq!(
            find_executable("no-such-harness-ferrobeam").unwrap_err(),
            "is not on the PATH"
        );
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("boot");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert_eq!(
            find_executable(plain.to_str().unwrap()).unwrap_err(),
            "is not an executable file"
        );
        assert!(install_hint(plain.to_str().unwrap()).contains("go build -o"));
    }
}
