//! Rules for `api.systemd.Unit`: what must hold so that the unit file the `systemd-units`
//! controller renders is one systemd loads as written. Pure; no rendering lives here.
//!
//! The object's name becomes the unit's name: object `indexer` is `indexer.service` (the proto
//! says so). Every string ends up on one line of a unit file, so control characters (a newline
//! would start a new directive) and a trailing backslash (a line continuation) are refused in
//! every field. `%` needs no rule: the renderer escapes it as `%%`, so specifiers never expand.
//!
//! Contradictions refused, from systemd.service(5) and what systemd 252 refuses to load:
//! - no `service`: only service units are supported;
//! - no `exec.start` unless `type: ONESHOT` (which then needs `exec.stop`), several only with
//!   ONESHOT;
//! - `restart: ALWAYS` or `ON_SUCCESS` with ONESHOT;
//! - `type: DBUS`, which needs `BusName=`, a field the type does not have;
//! - `pid_file` with a type other than FORKING (only forking services are found by it);
//! - `kill_mode: KILL_MODE_NONE`, which systemd deprecates and warns about at every load;
//! - one exit status in both `prevent_restart` and `force_restart`; exit statuses outside 0..=255.

use crate::api::systemd::{KillMode, OomPolicy, Restart, Service, ServiceType, Unit};

use super::Invalid;

/// The suffix the object's name gets to become the unit's name.
pub const SUFFIX: &str = ".service";

/// The longest object name: systemd's unit names are at most 255 bytes with the suffix.
pub const MAX_NAME: usize = 255 - SUFFIX.len();

/// Unit types systemd knows, for the names in dependency lists.
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// The unit name of the object named `name`: `<name>.service`.
pub fn unit_name(name: &str) -> String {
    format!("{name}{SUFFIX}")
}

/// Refuses a unit with an invalid name or contradictory fields. The error names the field.
pub fn validate(name: &str, unit: &Unit) -> Result<(), Invalid> {
    check_name(name)?;
    line("description", &unit.description)?;
    for (i, url) in unit.doc_url.iter().enumerate() {
        doc_url(&format!("doc_url[{i}]"), url)?;
    }
    for (field, names) in [
        ("wants", &unit.wants),
        ("requires", &unit.requires),
        ("after", &unit.after),
        ("before", &unit.before),
        ("binds_to", &unit.binds_to),
        ("part_of", &unit.part_of),
        ("conflicts", &unit.conflicts),
    ] {
        unit_names(field, names, None)?;
    }
    let Some(service) = &unit.service else {
        return Err(Invalid::new(
            "service",
            "is required: only service units are supported",
        ));
    };
    check_service(service)?;
    if let Some(install) = &unit.install {
        unit_names("install.wanted_by", &install.wanted_by, None)?;
        unit_names("install.required_by", &install.required_by, None)?;
        unit_names("install.alias", &install.alias, Some("service"))?;
        if let Some(i) = install.alias.iter().position(|a| *a == unit_name(name)) {
            return Err(Invalid::new(
                format!("install.alias[{i}]"),
                "is the unit's own name",
            ));
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), Invalid> {
    const FIELD: &str = "metadata.name";
    if name.is_empty() {
        return Err(Invalid::new(FIELD, "is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(Invalid::new(
            FIELD,
            format!(
                "is {} characters long; with '{SUFFIX}' a unit name has at most 255",
                name.len()
            ),
        ));
    }
    if let Some(c) = name.chars().find(|c| !unit_name_char(*c)) {
        return Err(Invalid::new(
            FIELD,
            format!("'{name}' has '{c}', which is not allowed in a systemd unit name"),
        ));
    }
    if name.starts_with(['-', '.']) {
        return Err(Invalid::new(
            FIELD,
            format!("'{name}' must not start with '-' or '.'"),
        ));
    }
    if let Some(t) = UNIT_TYPES.iter().find(|t| name.ends_with(&format!(".{t}"))) {
        return Err(Invalid::new(
            FIELD,
            format!(
                "'{name}' ends in '.{t}': the unit is named '<name>{SUFFIX}', so leave the suffix out"
            ),
        ));
    }
    Ok(())
}

/// Characters of systemd's unit names, except `@` (templates) and `\` (escapes), which an
/// object name never needs.
fn unit_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-')
}

/// A value that must stay on its one line of the unit file.
fn line(field: &str, value: &str) -> Result<(), Invalid> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Invalid::new(
            field,
            format!(
                "contains the control character {:?}; a unit file value is one line",
                c
            ),
        ));
    }
    if value.ends_with('\\') {
        return Err(Invalid::new(
            field,
            "ends with '\\', which would continue the line in the unit file",
        ));
    }
    Ok(())
}

fn doc_url(field: &str, url: &str) -> Result<(), Invalid> {
    line(field, url)?;
    const SCHEMES: &[&str] = &["http://", "https://", "file:", "info:", "man:"];
    if !SCHEMES.iter().any(|s| url.starts_with(s)) || url.contains(char::is_whitespace) {
        return Err(Invalid::new(
            field,
            format!(
                "'{url}' is not a documentation URL systemd accepts (http://, https://, file:, info:, man:, no spaces)"
            ),
        ));
    }
    Ok(())
}

/// Names of other units, e.g. `network-online.target` or `getty@tty1.service`; with `only`,
/// of that type alone.
fn unit_names(field: &str, names: &[String], only: Option<&str>) -> Result<(), Invalid> {
    for (i, name) in names.iter().enumerate() {
        let field = format!("{field}[{i}]");
        line(&field, name)?;
        let (prefix, suffix) = name.rsplit_once('.').unwrap_or((name, ""));
        let chars_ok = !prefix.is_empty()
            && name.len() <= 255
            && !name.starts_with(['-', '.'])
            && prefix
                .chars()
                .all(|c| unit_name_char(c) || c == '@' || c == '\\');
        let type_ok = match only {
            Some(t) => suffix == t,
            None => UNIT_TYPES.contains(&suffix),
        };
        if !chars_ok || !type_ok {
            let want = match only {
                Some(t) => format!("a unit name ending in '.{t}'"),
                None => "a unit name with its type, like 'network-online.target'".to_owned(),
            };
            return Err(Invalid::new(field, format!("'{name}' is not {want}")));
        }
    }
    Ok(())
}

fn absolute_path(field: &str, path: &str, optional_dash: bool) -> Result<(), Invalid> {
    line(field, path)?;
    let bare = if optional_dash {
        path.strip_prefix('-').unwrap_or(path)
    } else {
        path
    };
    if !bare.starts_with('/') || bare.contains(char::is_whitespace) {
        return Err(Invalid::new(
            field,
            format!("'{path}' is not an absolute path without spaces"),
        ));
    }
    Ok(())
}

fn enum_value<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E, Invalid> {
    E::try_from(value).map_err(|_| Invalid::new(field, format!("unknown value {value}")))
}

fn check_service(service: &Service) -> Result<(), Invalid> {
    line("service.title", &service.title)?;
    let kind: ServiceType = enum_value("service.type", service.r#type)?;
    let restart: Restart = enum_value("service.restart", service.restart)?;
    let _: OomPolicy = enum_value("service.oom_policy", service.oom_policy)?;
    let kill_mode: KillMode = enum_value("service.kill_mode", service.kill_mode)?;
    if kill_mode == KillMode::None {
        return Err(Invalid::new(
            "service.kill_mode",
            "KILL_MODE_NONE is deprecated in systemd (it stops tracking the service's \
             processes); use MIXED or CONTROL_GROUP",
        ));
    }
    let oneshot = kind == ServiceType::Oneshot;

    if kind == ServiceType::Dbus {
        return Err(Invalid::new(
            "service.type",
            "DBUS needs BusName=, which api.systemd.Unit cannot express; use NOTIFY or SIMPLE",
        ));
    }
    let exec = service.exec.clone().unwrap_or_default();
    for (field, lines) in [
        ("start", &exec.start),
        ("start_pre", &exec.start_pre),
        ("start_post", &exec.start_post),
        ("stop", &exec.stop),
        ("stop_post", &exec.stop_post),
        ("reload", &exec.reload),
        ("condition", &exec.condition),
    ] {
        for (i, command) in lines.iter().enumerate() {
            let field = format!("service.exec.{field}[{i}]");
            line(&field, command)?;
            if command.trim().is_empty() {
                return Err(Invalid::new(field, "is an empty command"));
            }
        }
    }
    match exec.start.len() {
        0 if !oneshot => {
            return Err(Invalid::new(
                "service.exec.start",
                "is required unless type is ONESHOT",
            ));
        }
        0 if exec.stop.is_empty() => {
            return Err(Invalid::new(
                "service.exec.start",
                "a ONESHOT service without start commands needs service.exec.stop",
            ));
        }
        0 | 1 => {}
        n if !oneshot => {
            return Err(Invalid::new(
                "service.exec.start",
                format!("has {n} commands; only a ONESHOT service may have more than one"),
            ));
        }
        _ => {}
    }
    if oneshot && matches!(restart, Restart::Always | Restart::OnSuccess) {
        return Err(Invalid::new(
            "service.restart",
            format!(
                "{} is not allowed with type ONESHOT (systemd refuses the unit)",
                restart.as_str_name()
            ),
        ));
    }
    if !service.pid_file.is_empty() {
        absolute_path("service.pid_file", &service.pid_file, false)?;
        if kind != ServiceType::Forking {
            return Err(Invalid::new(
                "service.pid_file",
                format!("only applies to type FORKING, not {}", type_name(kind)),
            ));
        }
    }
    if let Some(status) = &service.status {
        for (field, codes) in [
            ("success", &status.success),
            ("prevent_restart", &status.prevent_restart),
            ("force_restart", &status.force_restart),
        ] {
            if let Some(i) = codes.iter().position(|c| !(0..=255).contains(c)) {
                return Err(Invalid::new(
                    format!("service.status.{field}[{i}]"),
                    format!("{} is not an exit status (0 to 255)", codes[i]),
                ));
            }
        }
        if let Some(i) = status
            .force_restart
            .iter()
            .position(|c| status.prevent_restart.contains(c))
        {
            return Err(Invalid::new(
                format!("service.status.force_restart[{i}]"),
                format!(
                    "{} is also in service.status.prevent_restart",
                    status.force_restart[i]
                ),
            ));
        }
    }
    for (field, name) in [
        ("service.user", &service.user),
        ("service.group", &service.group),
    ] {
        if !name.is_empty()
            && (name.starts_with('-')
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(Invalid::new(
                field,
                format!("'{name}' is not a user or group name"),
            ));
        }
    }
    if !service.working_directory.is_empty() && service.working_directory != "~" {
        absolute_path(
            "service.working_directory",
            &service.working_directory,
            true,
        )?;
    }
    let mut keys: Vec<&String> = service.environment.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("service.environment[{key}]");
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Invalid::new(
                field,
                format!("'{key}' is not an environment variable name"),
            ));
        }
        line(&field, &service.environment[key])?;
    }
    for (i, file) in service.environment_file.iter().enumerate() {
        absolute_path(&format!("service.environment_file[{i}]"), file, true)?;
    }
    if !service.kill_signal.is_empty() && !is_signal(&service.kill_signal) {
        return Err(Invalid::new(
            "service.kill_signal",
            format!(
                "'{}' is not a signal (SIGTERM, TERM, 15, SIGRTMIN+1)",
                service.kill_signal
            ),
        ));
    }
    Ok(())
}

/// The systemd spelling of a service type, for messages.
fn type_name(kind: ServiceType) -> &'static str {
    match kind {
        ServiceType::Unspecified => "unspecified (SIMPLE)",
        other => other.as_str_name(),
    }
}

fn is_signal(signal: &str) -> bool {
    const NAMES: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
        "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
        "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR", "SYS",
    ];
    if let Ok(n) = signal.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let bare = signal.strip_prefix("SIG").unwrap_or(signal);
    if NAMES.contains(&bare) {
        return true;
    }
    let realtime = |base: &str, sign: char| {
        bare.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(sign)
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n <= 30)
        })
    };
    realtime("RTMIN", '+') || realtime("RTMAX", '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::systemd::{Exec, ExitStatus, Install};

    fn seed() -> Unit {
        Unit {
            description: "hey".into(),
            doc_url: vec!["file://".into()],
            wants: vec!["graphical.target".into()],
            service: Some(Service {
                title: "Don't run this without consulting me firtst".into(),
                r#type: ServiceType::Forking as i32,
                pid_file: "/blablabla/pid".into(),
                exec: Some(Exec {
                    start: vec!["echo \"Hey You!\"".into()],
                    ..Default::default()
                }),
                restart: Restart::OnFailure as i32,
                status: Some(ExitStatus {
                    success: vec![0, 1, 2],
                    prevent_restart: vec![66],
                    force_restart: vec![],
                }),
                oom_policy: OomPolicy::Kill as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn refused(name: &str, unit: &Unit) -> String {
        validate(name, unit).unwrap_err().to_string()
    }

    fn with(change: impl FnOnce(&mut Unit)) -> Unit {
        let mut unit = seed();
        change(&mut unit);
        unit
    }

    fn service(unit: &mut Unit) -> &mut Service {
        unit.service.as_mut().unwrap()
    }

    #[test]
    fn validate_accepts_the_seed_example() {
        assert_eq!(validate("indexer", &seed()), Ok(()));
        assert_eq!(unit_name("indexer"), "indexer.service");
    }

    #[test]
    fn validate_refuses_names_systemd_cannot_use() {
        assert_eq!(refused("", &seed()), "metadata.name: is empty");
        assert_eq!(
            refused("a@b", &seed()),
            "metadata.name: 'a@b' has '@', which is not allowed in a systemd unit name"
        );
        assert_eq!(
            refused("web.service", &seed()),
            "metadata.name: 'web.service' ends in '.service': the unit is named '<name>.service', so leave the suffix out"
        );
        assert!(refused(&"a".repeat(248), &seed()).starts_with("metadata.name: is 248 characters"));
        assert_eq!(validate(&"a".repeat(247), &seed()), Ok(()));
        assert!(refused("-x", &seed()).contains("must not start with"));
    }

    #[test]
    fn validate_refuses_values_that_would_break_the_unit_file() {
        let u = with(|u| u.description = "two\nlines".into());
        assert_eq!(
            refused("x", &u),
            "description: contains the control character '\\n'; a unit file value is one line"
        );
        let u = with(|u| service(u).exec.as_mut().unwrap().start[0] = "/bin/echo a \\".into());
        assert_eq!(
            refused("x", &u),
            "service.exec.start[0]: ends with '\\', which would continue the line in the unit file"
        );
        let u = with(|u| {
            service(u).environment.insert("A".into(), "x\ry".into());
        });
        assert!(refused("x", &u).starts_with("service.environment[A]: contains the control"));
        let u = with(|u| {
            service(u).environment.insert("1A".into(), "x".into());
        });
        assert_eq!(
            refused("x", &u),
            "service.environment[1A]: '1A' is not an environment variable name"
        );
        let u = with(|u| u.service.as_mut().unwrap().title = "a\nb".into());
        assert!(refused("x", &u).starts_with("service.title:"));
        let u = with(|u| u.wants.push("network target".into()));
        assert_eq!(
            refused("x", &u),
            "wants[1]: 'network target' is not a unit name with its type, like 'network-online.target'"
        );
        let u = with(|u| u.after.push("network".into()));
        assert!(refused("x", &u).starts_with("after[0]:"));
        let u = with(|u| u.doc_url.push("see the wiki".into()));
        assert!(refused("x", &u).starts_with("doc_url[1]:"));
        let u = with(|u| service(u).working_directory = "relative/dir".into());
        assert!(refused("x", &u).starts_with("service.working_directory:"));
        let u = with(|u| service(u).kill_signal = "SIGBOGUS".into());
        assert!(refused("x", &u).starts_with("service.kill_signal:"));
        let u = with(|u| service(u).user = "bad user".into());
        assert!(refused("x", &u).starts_with("service.user:"));
        let u = with(|u| {
            u.install = Some(Install {
                alias: vec!["other.socket".into()],
                ..Default::default()
            })
        });
        assert_eq!(
            refused("x", &u),
            "install.alias[0]: 'other.socket' is not a unit name ending in '.service'"
        );
    }

    #[test]
    fn validate_refuses_contradictory_fields() {
        let u = Unit::default();
        assert_eq!(
            refused("x", &u),
            "service: is required: only service units are supported"
        );
        let u = with(|u| service(u).exec = None);
        assert_eq!(
            refused("x", &u),
            "service.exec.start: is required unless type is ONESHOT"
        );
        let u = with(|u| {
            let s = service(u);
            s.r#type = ServiceType::Oneshot as i32;
            s.pid_file.clear();
            s.exec = None;
        });
        assert_eq!(
            refused("x", &u),
            "service.exec.start: a ONESHOT service without start commands needs service.exec.stop"
        );
        let u = with(|u| {
            service(u)
                .exec
                .as_mut()
                .unwrap()
                .start
                .push("/bin/true".into())
        });
        assert_eq!(
            refused("x", &u),
            "service.exec.start: has 2 commands; only a ONESHOT service may have more than one"
        );
        let u = with(|u| {
            let s = service(u);
            s.r#type = ServiceType::Oneshot as i32;
            s.pid_file.clear();
            s.restart = Restart::Always as i32;
        });
        assert_eq!(
            refused("x", &u),
            "service.restart: ALWAYS is not allowed with type ONESHOT (systemd refuses the unit)"
        );
        let u = with(|u| service(u).r#type = ServiceType::Simple as i32);
        assert_eq!(
            refused("x", &u),
            "service.pid_file: only applies to type FORKING, not SIMPLE"
        );
        let u = with(|u| {
            let s = service(u);
            s.r#type = ServiceType::Dbus as i32;
            s.pid_file.clear();
        });
        assert!(refused("x", &u).starts_with("service.type: DBUS needs BusName="));
        let u = with(|u| service(u).status.as_mut().unwrap().force_restart = vec![66]);
        assert_eq!(
            refused("x", &u),
            "service.status.force_restart[0]: 66 is also in service.status.prevent_restart"
        );
        let u = with(|u| service(u).status.as_mut().unwrap().success.push(256));
        assert_eq!(
            refused("x", &u),
            "service.status.success[3]: 256 is not an exit status (0 to 255)"
        );
        let u = with(|u| service(u).kill_mode = KillMode::None as i32);
        assert!(refused("x", &u).starts_with("service.kill_mode: KILL_MODE_NONE is deprecated"));
        let u = with(|u| service(u).r#type = 42);
        assert_eq!(refused("x", &u), "service.type: unknown value 42");
        let u = with(|u| {
            u.install = Some(Install {
                alias: vec!["x.service".into()],
                ..Default::default()
            })
        });
        assert_eq!(refused("x", &u), "install.alias[0]: is the unit's own name");
    }

    #[test]
    fn signals_are_names_numbers_or_realtime() {
        for ok in [
            "SIGTERM",
            "TERM",
            "15",
            "SIGRTMIN+3",
            "SIGRTMAX-1",
            "SIGKILL",
        ] {
            assert!(is_signal(ok), "{ok}");
        }
        for bad in ["", "SIGFOO", "0", "99", "SIGRTMIN+99", "sigterm"] {
            assert!(!is_signal(bad), "{bad}");
        }
    }
}
