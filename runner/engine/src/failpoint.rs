//! Named points where a test can make the job process die at a moment it
//! could not hit from outside (a kill lands there by chance only).
//!
//! `FERROBEAM_FAILPOINT=<name>` makes the process abort, as a crash would,
//! the first time it reaches the point called `<name>`.  Unset (always, in
//! production) a point costs one load of a cached flag.

use std::sync::OnceLock;

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            std::env::var("FERROBEAM_FAILPOINT")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .as_deref()
}

/// Aborts the process if the failpoint `name` is armed.
pub fn hit(name: &str) {
    if armed() == Some(name) {
        eprintln!("ferrobeam: failpoint {name:?} reached: aborting (FERROBEAM_FAILPOINT)");
        std::process::abort();
    }
}
