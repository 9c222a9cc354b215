//! The `cardinal` binary: configuration sources and `check`, as an operator or CI uses them.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::process::{Command, Output};

fn cardinal(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardinal"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cardinal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_shipped_rules() {
    let out = cardinal(&["check", "rules"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("20 services, 20 rules"), "{stdout}");
    // The opioid pack's value sets and the starter rules' product value sets are loaded and reported.
    assert!(stdout.contains("terminology: 57 value sets"), "{stdout}");
    // The shipped rules read well: no warnings.
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_warns_about_card_text_a_clinician_would_see_garbled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = dir.path().join("garbled");
    std::fs::create_dir_all(&service).expect("mkdir");
    std::fs::write(
        service.join("service.toml"),
        "id = \"garbled\"\nhook = \"patient-view\"\ndescription = \"d\"\nversion = \"1\"\n",
    )
    .expect("manifest");
    std::fs::write(
        service.join("rule.rhai"),
        "card(#{ summary: \"s\", indicator: \"info\",\n  detail: `Total ${1}.\\n\\nNext` + \"<table><tr><td>x</td></tr></table>\" });\n",
    )
    .expect("rule");
    let dir_arg = dir.path().to_string_lossy().into_owned();
    let out = cardinal(&["check", &dir_arg], &[]);
    // Warnings do not fail the check: the rules load and run.
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("rule.rhai:2:23: warning: escape sequence `\\n` in a backtick string"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rule.rhai:2:36: warning: HTML tag `<table>`"),
        "{stderr}"
    );
    assert!(stderr.contains("3 warning(s)"), "{stderr}");
}

#[test]
fn kubernetes_service_variables_are_not_settings() {
    // A Kubernetes Service named `cardinal` injects these into every pod of the namespace.
    let out = cardinal(
        &["check", "rules"],
        &[
            ("CARDINAL_PORT", "tcp://10.0.0.1:8080"),
            ("CARDINAL_PORT_8080_TCP_ADDR", "10.0.0.1"),
            ("CARDINAL_SERVICE_HOST", "10.0.0.1"),
            ("CARDINAL_SERVICE_PORT_HTTP", "8080"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn rules_dir_comes_from_the_environment() {
    let out = cardinal(
        &["check"],
        &[("CARDINAL_RULES_DIR", "tests/fixtures/rules-broken")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("broken.rhai:3:14: error: Unexpected ';'"),
        "{stderr}"
    );
    assert!(stderr.contains("3 error(s)"), "{stderr}");
}

#[test]
fn rules_dir_comes_from_the_config_file_and_env_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cardinal.toml");
    std::fs::write(&file, "rules_dir = \"tests/fixtures/rules-sandbox\"\n").expect("write");
    let path = file.to_string_lossy().into_owned();
    let out = cardinal(&["--config", &path, "check"], &[]);
    // The sandbox rules load, but fail on purpose: `check` finds the two it can see statically.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "c-runtime-error.rhai:3:1: error: function `no_such_function` is not defined"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("1 services, 8 rules"),
        "{}",
        text(&out.stdout)
    );
    let out = cardinal(
        &["check"],
        &[("CARDINAL_CONFIG", &path), ("CARDINAL_RULES_DIR", "rules")],
    );
    assert!(
        text(&out.stdout).contains("20 services, 20 rules"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn unknown_or_invalid_settings_are_refused() {
    let out = cardinal(&["check"], &[("CARDINAL_SANDBOX__MAX_OPERATIONSS", "5")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("max_operationss"),
        "{}",
        text(&out.stderr)
    );
    let out = cardinal(&["check"], &[("CARDINAL_LISTEN", "not-an-address")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid configuration"),
        "{}",
        text(&out.stderr)
    );
    let out = cardinal(&["--config", "no/such/file.toml", "check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_refuses_to_start_on_broken_rules() {
    let out = cardinal(
        &[
            "serve",
            "--rules",
            "tests/fixtures/rules-broken",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("misspelt.rhai:2:9: Undefined variable: patinet"),
        "{stderr}"
    );
    assert!(
        stderr.contains("service.toml:5:1: unknown field `titel`"),
        "{stderr}"
    );
    assert!(stderr.contains("refusing to start"), "{stderr}");
}

#[test]
fn a_value_set_no_source_knows_is_reported_where_the_rule_names_it() {
    let out = cardinal(&["check", "tests/fixtures/rules-unknown-valueset"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "vs-check/check.rhai:2:66: error: value set `http://example.org/fhir/ValueSet/not-shipped` \
             is not in any `valuesets/` folder"
        ),
        "{stderr}"
    );
}
