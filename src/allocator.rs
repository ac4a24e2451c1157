//! The global allocator of the `pushgate` binary, and how it gives memory back.
//!
//! mimalloc instead of glibc's malloc: a notification allocates many small
//! short-lived objects (XML tree, JSON, HTTP/2 frames) across threads, and
//! glibc's allocator took about a quarter of the gateway's CPU time under load
//! (BENCHMARKS.md, "Profile").
//!
//! mimalloc's defaults suit short programs more than a server sized by its RSS:
//! it commits its first arena eagerly and returns freed pages to the OS only
//! after 1 s (10 s for arena memory). Under load that kept 150+ MiB resident
//! for ~40 MiB in use (BENCHMARKS.md, "Memory"). [`tune`] commits on demand and
//! purges after 100 ms, at no measurable CPU cost. It runs before `main`
//! (an ELF constructor), because the first arena is reserved by the runtime's
//! first allocations, before `main` starts; setting the option later only
//! changes arenas reserved after that.

use libmimalloc_sys::{mi_option_set_default, mi_option_t};
use std::ffi::c_long;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in the mimalloc v3 that `libmimalloc-sys`
/// (pinned in Cargo.toml) builds: its index in `mi_option_e`, mimalloc.h.
/// Default 2 (eager on Linux); 0 commits pages as they are used.
const ARENA_EAGER_COMMIT: mi_option_t = 4;
/// `mi_option_purge_delay`: ms before freed memory goes back to the OS
/// (default 1000).
const PURGE_DELAY: mi_option_t = 15;

/// Our defaults. `mi_option_set_default` leaves an option that the environment
/// set (`MIMALLOC_ARENA_EAGER_COMMIT`, `MIMALLOC_PURGE_DELAY`) alone, so an
/// operator can still override them.
const SETTINGS: [(mi_option_t, c_long); 2] = [(ARENA_EAGER_COMMIT, 0), (PURGE_DELAY, 100)];

/// Applies [`SETTINGS`]. Allocates nothing, so it is safe before `main`.
extern "C" fn tune() {
    for (option, value) in SETTINGS {
        // SAFETY: sets an integer in mimalloc's option table; no memory is
        // touched but that table, and an out-of-range index is ignored.
        unsafe { mi_option_set_default(option, value) };
    }
}

/// Runs [`tune`] from the ELF `.init_array`, before the Rust runtime allocates.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static TUNE_BEFORE_MAIN: extern "C" fn() = tune;

/// Elsewhere, as early as `main` can: arenas reserved from now on follow it.
#[cfg(not(target_os = "linux"))]
pub(crate) fn tune_in_main() {
    tune();
}
