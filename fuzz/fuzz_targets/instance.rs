//! An instance file as the CLI and the service read it: UTF-8 text parsed
//! as JSON and as YAML, and every instance that parses validated and, when
//! valid, built into the optimisation problem. Errors are fine; a panic,
//! an abort or unbounded memory or time is a bug.
#![no_main]

extern crate edgeplan_fuzz;

use edgeplan::instance::{parse, Format};
use edgeplan::validate::validate_and_build;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Json, Format::Yaml] {
        if let Ok(instance) = parse(text, format) {
            match validate_and_build(&instance) {
                Ok(_problem) => {}
                Err(issues) => assert!(
                    !issues.is_empty(),
                    "validate_and_build refused the instance without naming a problem"
                ),
            }
        }
    }
});
