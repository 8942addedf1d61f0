//! A what-if scenario file as `edgeplan whatif` reads it: parsed, sweeps
//! expanded, and every scenario applied to a small fixed base instance
//! (the three-city fleet). Errors are fine; a panic is a bug.
#![no_main]

use std::sync::OnceLock;

use edgeplan::instance::{parse, Format, Instance};
use edgeplan::whatif;
use libfuzzer_sys::fuzz_target;

fn base() -> &'static Instance {
    static BASE: OnceLock<Instance> = OnceLock::new();
    BASE.get_or_init(|| {
        parse(edgeplan_fuzz::BASE_INSTANCE_YAML, Format::Yaml).expect("the base instance parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = whatif::parse(text) else {
        return;
    };
    let scenarios = match whatif::expand(&file) {
        Ok(s) => s,
        Err(issues) => {
            assert!(!issues.is_empty(), "expand failed without naming a problem");
            return;
        }
    };
    let base = base();
    for scenario in &scenarios {
        match whatif::apply(base, scenario, "scenario") {
            Ok(_instance) => {}
            Err(issues) => assert!(!issues.is_empty(), "apply failed without naming a problem"),
        }
    }
});
