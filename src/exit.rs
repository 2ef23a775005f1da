//! The process's exit codes, one place for every command (`cli.rs`, `policy_cli.rs`).

/// Exit code for bad input: usage, config or capture errors.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for failures at run time.
pub const EXIT_FAILURE: i32 = 1;
