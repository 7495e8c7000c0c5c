//! `systemd-analyze verify` on what this crate renders and on the unit files Rube ships
//! (`apiserver/systemd/`, `rubelet/systemd/`). Runs systemd's own loader offline: no manager needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use rubeapi::api::systemd::Unit;
use rubeapi::object::ObjectExt;
use systemd_units::render;

/// Returns false (after saying why, loudly) when systemd-analyze is not installed, unless
/// `RUBE_REQUIRE_SYSTEMD` is set, where that is a failure.
fn have_systemd_analyze() -> bool {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    let why = "systemd-analyze is not installed (Debian package systemd)";
    assert!(std::env::var_os("RUBE_REQUIRE_SYSTEMD").is_none(), "{why}");
    rubeapi::testing::skip("verify", &format!("{why}; nothing was verified"));
    false
}

/// Runs `systemd-analyze verify --man=no ARGS`; Err with its output when it exits non-zero or
/// says anything about `names` (systemd reports bad values as "..., ignoring" and exits 0).
fn verify(args: &[&str], names: &[String]) -> Result<(), String> {
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|line| names.iter().any(|n| line.contains(n.as_str())))
        .collect();
    if output.status.success() && about_ours.is_empty() {
        Ok(())
    } else {
        Err(format!("{}:\n{stderr}", output.status))
    }
}

fn object(path: &Path) -> (String, String, Unit) {
    let text = std::fs::read_to_string(path).unwrap();
    let object = rubeapi::text::parse_object(&rubeapi::Registry::builtin(), &text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let unit: Unit = object.spec_as().unwrap();
    rubeapi::validate::unit::validate(object.name(), &unit).unwrap();
    (object.namespace().into(), object.name().into(), unit)
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_rendered_example_passes_systemd_analyze_verify() {
    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![manifest().join("../../examples/system/indexer.textproto")];
    for entry in std::fs::read_dir(manifest().join("tests/data")).unwrap() {
        files.push(entry.unwrap().path());
    }
    files.sort();
    let mut paths = Vec::new();
    let mut names = Vec::new();
    for file in &files {
        let (namespace, name, unit) = object(file);
        let unit_name = rubeapi::validate::unit::unit_name(&name);
        for target in ["multi-user.target", "default.target"] {
            let sub = dir.path().join(target);
            std::fs::create_dir_all(&sub).unwrap();
            let path = sub.join(&unit_name);
            std::fs::write(&path, render(&namespace, &name, &unit, target)).unwrap();
            paths.push(path.to_string_lossy().into_owned());
        }
        names.push(unit_name);
    }
    assert!(names.len() >= 4, "{names:?}");
    for path in &paths {
        verify(&[path], &names).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn verify_catches_what_systemd_only_warns_about() {
    // The check above must be able to fail: systemd exits 0 on an unknown value.
    if !have_systemd_analyze() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.service");
    std::fs::write(&path, "[Service]\nType=bogus\nExecStart=/bin/true\n").unwrap();
    let err = verify(&[path.to_str().unwrap()], &["broken.service".into()]).unwrap_err();
    assert!(err.contains("Failed to parse service type"), "{err}");
    std::fs::write(&path, "[Service]\nExecStart=no-such-program-anywhere\n").unwrap();
    assert!(verify(&[path.to_str().unwrap()], &["broken.service".into()]).is_err());
}

/// The shipped unit files, verified in a scratch root (`--root`): systemd's own units copied
/// in, so their dependencies resolve, and the two binaries as stubs at the installed paths,
/// because verify checks that each ExecStart= program exists and is executable (the real
/// binaries are installed by docs/operations.md, and need not be built for this test).
#[test]
fn the_shipped_unit_files_pass_systemd_analyze_verify() {
    if !have_systemd_analyze() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("multi-user.target").exists())
        .expect("systemd's own units (multi-user.target) are installed");
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(system)
        .arg(r.join("usr/lib/systemd/system"))
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    let top = manifest().join("../..");
    let mut names = Vec::new();
    for (dir, unit, binary) in [
        (
            "apiserver/systemd",
            "rube-apiserver.service",
            "rube-apiserver",
        ),
        ("rubelet/systemd", "rubelet.service", "rubelet"),
    ] {
        let stub = r.join("usr/local/bin").join(binary);
        std::fs::write(&stub, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::copy(
            top.join(dir).join(unit),
            r.join("etc/systemd/system").join(unit),
        )
        .unwrap();
        names.push(unit.to_owned());
    }
    let root_arg = format!("--root={}", r.display());
    verify(
        &[&root_arg, "rube-apiserver.service", "rubelet.service"],
        &names,
    )
    .unwrap();

    // And the check is real: without the binary, verify fails.
    std::fs::remove_file(r.join("usr/local/bin/rubelet")).unwrap();
    let err = verify(&[&root_arg, "rubelet.service"], &names).unwrap_err();
    assert!(err.contains("is not executable"), "{err}");
}
