//! The configuration loader: arbitrary TOML and `PUSHGATE_…` overrides
//! (after a NUL byte, one `NAME=value` per line) give a configuration or an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = text.split_once('\0').unwrap_or((text, ""));
    let vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("PUSHGATE_{k}"), v.to_owned()))
        .collect();
    let _ = pushgate::config::load_from_str(toml, "fuzz", vars);
});
