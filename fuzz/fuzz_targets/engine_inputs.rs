//! The engine never panics and never reports a deadline it does not consume, whatever
//! inputs arrive in whatever order (including for connections it never opened). The inputs
//! are spelled by `holdfast::engine::byte_script`, which the native property test shares.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| holdfast::engine::byte_script::drive(data));
