//! Rendering: an `api.systemd.Unit` as the text of its unit file. Pure: no I/O, no clock; the
//! same unit always renders to the same bytes, which is how the controller tells whether the
//! file on disk is current. Nothing here decides what to do with the text.
//!
//! The mapping, field by field, is the comment beside each field in `proto/api/systemd.proto`.
//! Choices made here:
//! - The first line is the [`marker`] naming the object; the controller touches only files that
//!   carry it, and `inventory` reads the object's key back from it ([`parse_marker`]).
//! - Every value has `%` written as `%%`, so systemd's specifiers never expand: a value means
//!   what it says. Values are otherwise verbatim: `exec.start` is systemd's command syntax, not
//!   a shell's (systemd splits words and honours quotes, expands `$VAR` from `Environment=`, and
//!   looks a bare program name like `echo` up in its fixed search path; use `/bin/sh -c '...'`
//!   for pipes and redirections).
//! - Lists become one directive per entry; zero numbers, empty strings and unspecified enums
//!   are left out, so systemd's defaults apply.
//! - Without `install.wanted_by` or `install.required_by` the unit is wanted by the manager's
//!   default target (`multi-user.target`, or `default.target` for a user manager), so that
//!   `enabled: true` has something to enable and toggling it never changes the file.
//! - `StartLimitBurst=`/`StartLimitIntervalSec=` go in `[Unit]`, where systemd reads them.
//! - The service's `title` is a comment at the head of `[Service]`.

use std::fmt::Write;

use prost::Name;
use rubeapi::api::systemd::{KillMode, OomPolicy, Restart, ServiceType, Unit};
use rubeapi::object::Key;

/// Names the kind in every file written, so it stays what it is on disk even if the type is
/// renamed; a test holds it to `Unit::full_name()`.
const MARKER_PREFIX: &str = "# Managed by Rube (api.systemd.Unit ";
const MARKER_SUFFIX: &str = "); edits are overwritten.";

/// The first line of every file this controller writes, naming its object.
pub fn marker(namespace: &str, name: &str) -> String {
    format!("{MARKER_PREFIX}{namespace}/{name}{MARKER_SUFFIX}")
}

/// The key of the object a unit file was written for, or `None` when the file does not start
/// with this controller's marker (it was not written by Rube, and is never touched).
pub fn parse_marker(content: &str) -> Option<Key> {
    let first = content.lines().next()?;
    let inner = first
        .strip_prefix(MARKER_PREFIX)?
        .strip_suffix(MARKER_SUFFIX)?;
    let (namespace, name) = inner.split_once('/')?;
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some(Key::new(&Unit::full_name(), namespace, name))
}

/// The unit file of object `namespace/name`. `default_target` is what the unit is wanted by
/// when its `install` names no target. The unit should have passed
/// `rubeapi::validate::unit::validate`; rendering never fails, but an invalid unit renders to
/// a file systemd may refuse.
pub fn render(namespace: &str, name: &str, unit: &Unit, default_target: &str) -> String {
    let service = unit.service.clone().unwrap_or_default();
    let exec = service.exec.clone().unwrap_or_default();
    let time = service.time.unwrap_or_default();
    let status = service.status.clone().unwrap_or_default();
    let resources = service.resources.unwrap_or_default();
    let install = unit.install.clone().unwrap_or_default();

    let mut file = Text(String::new());
    file.raw(&marker(namespace, name));
    file.raw("[Unit]");
    file.set("Description", &unit.description);
    file.each("Documentation", &unit.doc_url);
    file.each("Wants", &unit.wants);
    file.each("Requires", &unit.requires);
    file.each("After", &unit.after);
    file.each("Before", &unit.before);
    file.each("BindsTo", &unit.binds_to);
    file.each("PartOf", &unit.part_of);
    file.each("Conflicts", &unit.conflicts);
    file.set(
        "StartLimitIntervalSec",
        &number(service.start_limit_interval_seconds),
    );
    file.set(
        "StartLimitBurst",
        &number(u64::from(service.start_limit_burst)),
    );

    file.raw("");
    file.raw("[Service]");
    if !service.title.is_empty() {
        file.raw(&format!("# {}", service.title));
    }
    file.set("Type", service_type(service.r#type));
    file.set("PIDFile", &service.pid_file);
    file.each("ExecCondition", &exec.condition);
    file.each("ExecStartPre", &exec.start_pre);
    file.each("ExecStart", &exec.start);
    file.each("ExecStartPost", &exec.start_post);
    file.each("ExecReload", &exec.reload);
    file.each("ExecStop", &exec.stop);
    file.each("ExecStopPost", &exec.stop_post);
    file.set("RestartSec", &number(time.restart));
    file.set("TimeoutSec", &number(time.timeout));
    file.set("TimeoutStartSec", &number(time.timeout_start));
    file.set("TimeoutStopSec", &number(time.timeout_stop));
    file.set("RuntimeMaxSec", &number(time.limit));
    file.set("WatchdogSec", &number(time.watchdog));
    file.set("Restart", restart(service.restart));
    file.set("SuccessExitStatus", &codes(&status.success));
    file.set("RestartPreventExitStatus", &codes(&status.prevent_restart));
    file.set("RestartForceExitStatus", &codes(&status.force_restart));
    file.set("OOMPolicy", oom_policy(service.oom_policy));
    file.set(
        "RemainAfterExit",
        if service.remain_after_exit { "yes" } else { "" },
    );
    file.set("User", &service.user);
    file.set("Group", &service.group);
    file.set("WorkingDirectory", &service.working_directory);
    let mut environment: Vec<_> = service.environment.iter().collect();
    environment.sort();
    for (key, value) in environment {
        // Quoted, so spaces stay inside the value; systemd unescapes \\ and \" within quotes.
        let assignment = format!("{key}={value}")
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        file.set("Environment", &format!("\"{assignment}\""));
    }
    file.each("EnvironmentFile", &service.environment_file);
    file.set("KillMode", kill_mode(service.kill_mode));
    file.set("KillSignal", &service.kill_signal);
    file.set("MemoryMax", &number(resources.memory_max_bytes));
    if resources.cpu_quota_percent > 0 {
        // The `%` is the directive's own syntax here, not part of a value: not escaped.
        file.raw(&format!("CPUQuota={}%", resources.cpu_quota_percent));
    }
    file.set("TasksMax", &number(resources.tasks_max));

    file.raw("");
    file.raw("[Install]");
    if install.wanted_by.is_empty() && install.required_by.is_empty() {
        file.set("WantedBy", default_target);
    }
    file.each("WantedBy", &install.wanted_by);
    file.each("RequiredBy", &install.required_by);
    file.each("Alias", &install.alias);
    file.0
}

/// A unit file being written, line by line.
struct Text(String);

impl Text {
    fn raw(&mut self, line: &str) {
        self.0.push_str(line);
        self.0.push('\n');
    }

    /// `key=value`, left out when the value is empty.
    fn set(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            let _ = writeln!(self.0, "{key}={}", escape(value));
        }
    }

    fn each(&mut self, key: &str, values: &[String]) {
        for value in values {
            self.set(key, value);
        }
    }
}

/// `%` starts a specifier in almost every directive; `%%` is a literal `%`.
fn escape(value: &str) -> String {
    value.replace('%', "%%")
}

fn number(n: u64) -> String {
    if n == 0 { String::new() } else { n.to_string() }
}

fn codes(codes: &[i32]) -> String {
    codes
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn service_type(value: i32) -> &'static str {
    match ServiceType::try_from(value).unwrap_or(ServiceType::Unspecified) {
        ServiceType::Unspecified => "",
        ServiceType::Simple => "simple",
        ServiceType::Exec => "exec",
        ServiceType::Forking => "forking",
        ServiceType::Oneshot => "oneshot",
        ServiceType::Dbus => "dbus",
        ServiceType::Notify => "notify",
        ServiceType::NotifyReload => "notify-reload",
        ServiceType::Idle => "idle",
    }
}

fn restart(value: i32) -> &'static str {
    match Restart::try_from(value).unwrap_or(Restart::Unspecified) {
        Restart::Unspecified => "",
        Restart::No => "no",
        Restart::OnSuccess => "on-success",
        Restart::OnFailure => "on-failure",
        Restart::OnAbnormal => "on-abnormal",
        Restart::OnWatchdog => "on-watchdog",
        Restart::OnAbort => "on-abort",
        Restart::Always => "always",
    }
}

fn oom_policy(value: i32) -> &'static str {
    match OomPolicy::try_from(value).unwrap_or(OomPolicy::Unspecified) {
        OomPolicy::Unspecified => "",
        OomPolicy::Continue => "continue",
        OomPolicy::Stop => "stop",
        OomPolicy::Kill => "kill",
    }
}

fn kill_mode(value: i32) -> &'static str {
    match KillMode::try_from(value).unwrap_or(KillMode::Unspecified) {
        KillMode::Unspecified => "",
        KillMode::ControlGroup => "control-group",
        KillMode::Process => "process",
        KillMode::Mixed => "mixed",
        KillMode::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use rubeapi::api::systemd::{Exec, ExitStatus, Install, Service, ServiceResources, Time};
    use rubeapi::object::ObjectExt;

    /// The seed's example, read from the file the other tests put verbatim.
    fn seed() -> (String, String, Unit) {
        let text = include_str!("../../../examples/system/indexer.textproto");
        let registry = rubeapi::Registry::builtin();
        let objects = rubeapi::text::parse_objects(&registry, text).unwrap();
        let object = &objects[0];
        (
            object.namespace().to_owned(),
            object.name().to_owned(),
            object.spec_as().unwrap(),
        )
    }

    #[test]
    fn the_seed_example_renders_to_its_unit_file() {
        let (namespace, name, unit) = seed();
        expect![[r#"
            # Managed by Rube (api.systemd.Unit system/indexer); edits are overwritten.
            [Unit]
            Description=hey
            Documentation=file://
            Wants=graphical.target

            [Service]
            # Don't run this without consulting me firtst
            Type=forking
            PIDFile=/blablabla/pid
            ExecStart=echo "Hey You!"
            RestartSec=60
            TimeoutSec=30
            RuntimeMaxSec=3600
            WatchdogSec=60
            Restart=on-failure
            SuccessExitStatus=0 1 2
            RestartPreventExitStatus=66
            OOMPolicy=kill

            [Install]
            WantedBy=multi-user.target
        "#]]
        .assert_eq(&render(&namespace, &name, &unit, "multi-user.target"));
    }

    /// Every field of the type set, to see each directive once.
    pub(crate) fn everything() -> Unit {
        Unit {
            description: "all 100% of it".into(),
            doc_url: vec!["https://example.com/doc".into(), "man:sleep(1)".into()],
            wants: vec!["network-online.target".into()],
            requires: vec!["basic.target".into()],
            after: vec!["network-online.target".into(), "basic.target".into()],
            before: vec!["shutdown.target".into()],
            binds_to: vec!["basic.target".into()],
            part_of: vec!["multi-user.target".into()],
            conflicts: vec!["rescue.service".into()],
            service: Some(Service {
                title: "Everything".into(),
                r#type: ServiceType::Notify as i32,
                pid_file: String::new(),
                exec: Some(Exec {
                    start: vec!["/bin/sleep 1000".into()],
                    start_pre: vec!["/bin/true".into()],
                    start_post: vec!["/bin/echo started at 50%".into()],
                    stop: vec!["/bin/kill -TERM $MAINPID".into()],
                    stop_post: vec!["-/bin/rm -f /tmp/x".into()],
                    reload: vec!["/bin/kill -HUP $MAINPID".into()],
                    condition: vec!["/bin/test -d /tmp".into()],
                }),
                time: Some(Time {
                    restart: 5,
                    timeout: 30,
                    limit: 3600,
                    watchdog: 10,
                    timeout_start: 20,
                    timeout_stop: 15,
                }),
                restart: Restart::Always as i32,
                status: Some(ExitStatus {
                    success: vec![0, 3],
                    prevent_restart: vec![66],
                    force_restart: vec![70, 71],
                }),
                oom_policy: OomPolicy::Continue as i32,
                user: "root".into(),
                group: "root".into(),
                working_directory: "/tmp".into(),
                environment: [
                    ("GREETING".to_owned(), "say \"hi\" 100% \\o/".to_owned()),
                    ("A".to_owned(), "1".to_owned()),
                ]
                .into_iter()
                .collect(),
                environment_file: vec!["-/etc/default/everything".into()],
                kill_mode: KillMode::Mixed as i32,
                kill_signal: "SIGINT".into(),
                remain_after_exit: true,
                resources: Some(ServiceResources {
                    memory_max_bytes: 268_435_456,
                    cpu_quota_percent: 150,
                    tasks_max: 64,
                }),
                start_limit_burst: 5,
                start_limit_interval_seconds: 60,
            }),
            install: Some(Install {
                wanted_by: vec!["multi-user.target".into()],
                required_by: vec!["graphical.target".into()],
                alias: vec!["everything-alias.service".into()],
            }),
            enabled: true,
        }
    }

    #[test]
    fn every_field_renders_to_its_directive() {
        assert_eq!(
            rubeapi::validate::unit::validate("everything", &everything()),
            Ok(())
        );
        expect![[r##"
            # Managed by Rube (api.systemd.Unit system/everything); edits are overwritten.
            [Unit]
            Description=all 100%% of it
            Documentation=https://example.com/doc
            Documentation=man:sleep(1)
            Wants=network-online.target
            Requires=basic.target
            After=network-online.target
            After=basic.target
            Before=shutdown.target
            BindsTo=basic.target
            PartOf=multi-user.target
            Conflicts=rescue.service
            StartLimitIntervalSec=60
            StartLimitBurst=5

            [Service]
            # Everything
            Type=notify
            ExecCondition=/bin/test -d /tmp
            ExecStartPre=/bin/true
            ExecStart=/bin/sleep 1000
            ExecStartPost=/bin/echo started at 50%%
            ExecReload=/bin/kill -HUP $MAINPID
            ExecStop=/bin/kill -TERM $MAINPID
            ExecStopPost=-/bin/rm -f /tmp/x
            RestartSec=5
            TimeoutSec=30
            TimeoutStartSec=20
            TimeoutStopSec=15
            RuntimeMaxSec=3600
            WatchdogSec=10
            Restart=always
            SuccessExitStatus=0 3
            RestartPreventExitStatus=66
            RestartForceExitStatus=70 71
            OOMPolicy=continue
            RemainAfterExit=yes
            User=root
            Group=root
            WorkingDirectory=/tmp
            Environment="A=1"
            Environment="GREETING=say \"hi\" 100%% \\o/"
            EnvironmentFile=-/etc/default/everything
            KillMode=mixed
            KillSignal=SIGINT
            MemoryMax=268435456
            CPUQuota=150%
            TasksMax=64

            [Install]
            WantedBy=multi-user.target
            RequiredBy=graphical.target
            Alias=everything-alias.service
        "##]]
        .assert_eq(&render(
            "system",
            "everything",
            &everything(),
            "unused.target",
        ));
    }

    #[test]
    fn the_marker_names_the_object_and_nothing_else_parses() {
        let (_, _, unit) = seed();
        let text = render("system", "indexer", &unit, "multi-user.target");
        assert_eq!(
            parse_marker(&text),
            Some(Key::new(&Unit::full_name(), "system", "indexer"))
        );
        assert_eq!(
            MARKER_PREFIX,
            format!("# Managed by Rube ({} ", Unit::full_name())
        );
        assert_eq!(parse_marker("[Unit]\nDescription=x\n"), None);
        assert_eq!(parse_marker(""), None);
        assert_eq!(
            parse_marker("# Managed by Rube (api.systemd.Unit a/b/c); edits are overwritten."),
            None
        );
    }
}
