//! ructl end to end: the real binary against a real apiserver (sqlite in a temp dir, gRPC on
//! port 0). The seed's commands are used verbatim.

use std::process::Stdio;
use std::time::Duration;

use apiserver::testing::TestServer;
use prost_reflect::DynamicMessage;
use rubeapi::rube::{Object, Selector};
use rubeapi::{Registry, text};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const SEED_UNIT: &str = include_str!("../../examples/system/indexer.textproto");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn ructl(server: &TestServer, args: &[&str], stdin: &str) -> Run {
    ructl_with(&server.config_path(), args, stdin).await
}

/// `ructl --config CONFIG ARGS`, with `stdin`.
async fn ructl_with(config: &std::path::Path, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ructl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ructl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("ructl finishes within 30 s")
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

async fn ok(server: &TestServer, args: &[&str], stdin: &str) -> String {
    let run = ructl(server, args, stdin).await;
    assert_eq!(run.code, 0, "ructl {args:?} failed: {}", run.stderr);
    run.stdout
}

/// A `ructl watch` running in the background, read line by line.
struct Watcher {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Watcher {
    async fn start(server: &TestServer, args: &[&str]) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ructl"))
            .arg("--config")
            .arg(server.config_path())
            .arg("watch")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("run ructl watch");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Watcher { child, lines }
    }

    /// The next event as printed: every line up to the blank line that ends it.
    async fn next_event(&mut self) -> String {
        let mut event = String::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .expect("a watch event within 10 s")
                .unwrap()
                .expect("ructl watch is still running");
            if line.is_empty() && !event.is_empty() {
                return event;
            }
            event.push_str(&line);
            event.push('\n');
        }
    }
}

async fn revision(server: &TestServer) -> u64 {
    server
        .client()
        .await
        .list(Selector::default())
        .await
        .unwrap()
        .revision
}

fn spec_of(object: &Object) -> DynamicMessage {
    let registry = Registry::builtin();
    let spec = object.spec.as_ref().unwrap();
    let descriptor = registry
        .message(rubeapi::type_name_of_url(&spec.type_url))
        .unwrap();
    DynamicMessage::decode(descriptor, spec.value.as_slice()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_example_puts_gets_watches_and_deletes_verbatim() {
    let server = TestServer::start().await;
    // Started before anything exists: the seed's global watch.
    let mut watcher = Watcher::start(&server, &["-t", "api.systemd.Unit"]).await;
    // Let the watch reach the server before the put.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let put = ok(&server, &["put"], SEED_UNIT).await;
    assert_eq!(
        put,
        "api.systemd.Unit system/indexer created (revision 1)\n"
    );
    assert_eq!(
        ok(&server, &["put"], SEED_UNIT).await,
        "api.systemd.Unit system/indexer unchanged (revision 1)\n"
    );

    // get returns it field for field.
    let got = ok(
        &server,
        &["get", "-t", "api.systemd.Unit", "-n", "system", "indexer"],
        "",
    )
    .await;
    let registry = Registry::builtin();
    let stored = text::parse_object(&registry, &got).unwrap();
    let original = text::parse_object(&registry, SEED_UNIT).unwrap();
    assert_eq!(spec_of(&stored), spec_of(&original));
    let m = stored.metadata.as_ref().unwrap();
    assert_eq!(
        (
            m.namespace.as_str(),
            m.name.as_str(),
            m.revision,
            m.generation
        ),
        ("system", "indexer", 1, 1)
    );
    assert!(got.contains("[rube/api.systemd.Unit] {"), "{got}");

    let update = watcher.next_event().await;
    assert!(
        update.starts_with(
            "update {\n  metadata {\n    namespace: \"system\"\n    name: \"indexer\"\n"
        ),
        "{update}"
    );
    assert!(update.contains("oom_policy: KILL"), "{update}");

    // The seed's long form of delete.
    let deleted = ok(
        &server,
        &[
            "delete",
            r#"type = "api.systemd.Unit", metadata { namespace: "system", name: "indexer" }"#,
        ],
        "",
    )
    .await;
    assert_eq!(
        deleted,
        "api.systemd.Unit system/indexer deleted (revision 2)\n"
    );
    let delete = watcher.next_event().await;
    assert!(delete.starts_with("delete {\n  metadata {\n"), "{delete}");
    assert!(delete.contains("revision: 2"), "{delete}");

    // And the shorthand, watched per namespace and per object as in the seed.
    let mut per_namespace =
        Watcher::start(&server, &["-t", "api.systemd.Unit", "-n", "system"]).await;
    let mut per_object = Watcher::start(
        &server,
        &["-t", "api.systemd.Unit", "-n", "system", "indexer"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(&server, &["put"], SEED_UNIT).await;
    let deleted = ok(
        &server,
        &[
            "delete",
            "-t",
            "api.systemd.Unit",
            "-n",
            "system",
            "indexer",
        ],
        "",
    )
    .await;
    assert_eq!(
        deleted,
        "api.systemd.Unit system/indexer deleted (revision 4)\n"
    );
    for w in [&mut watcher, &mut per_namespace, &mut per_object] {
        assert!(w.next_event().await.starts_with("update {"));
        let delete = w.next_event().await;
        assert!(
            delete.starts_with("delete {") && delete.contains("revision: 4"),
            "{delete}"
        );
    }
    watcher.child.kill().await.unwrap();

    // --from-revision replays history.
    let mut replay =
        Watcher::start(&server, &["-t", "api.systemd.Unit", "--from-revision", "1"]).await;
    assert!(replay.next_event().await.contains("revision: 2"));
    assert!(replay.next_event().await.contains("revision: 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_clear_line_a_failing_exit_and_changes_nothing() {
    let server = TestServer::start().await;
    ok(&server, &["put"], SEED_UNIT).await;
    let herd =
        "metadata { name: \"analytics\" }\nspec { [rube/runink.Herd] { description: \"x\" } }\n";
    ok(&server, &["put"], herd).await;
    let big = format!(
        "metadata {{ namespace: \"system\" name: \"big\" }}\nspec {{ [rube/api.systemd.Unit] {{ description: \"{}\" }} }}\n",
        "x".repeat(2 * 1024 * 1024)
    );
    let second_bad = format!(
        "{SEED_UNIT}---\nmetadata {{ namespace: \"system\" name: \"Bad\" }}\nspec {{ [rube/api.systemd.Unit] {{ }} }}\n"
    );
    let cases: Vec<(Vec<&str>, String, &str)> = vec![
        (
            vec!["put"],
            "metadata { namespace: \"system\" name: \"x\" \n".into(),
            "error: <stdin>:2:1: expected '}' or a field name, but reached end of input",
        ),
        (
            vec!["put"],
            "metadata { namespace: \"system\" name: \"x\" }\nspec { [rube/api.systemd.Unti] { } }\n".into(),
            "error: <stdin>:2:8: message type 'api.systemd.Unti' not found",
        ),
        (
            vec!["put"],
            "metadata { name: \"x\" }\nspec {\n  [rube/runink.Herd] {\n    wants: \"graphical.target\"\n  }\n}\n".into(),
            "error: <stdin>:4:5: field 'wants' not found for message 'runink.Herd'",
        ),
        (
            vec!["put"],
            "metadata { namespace: \"system\" }\nspec { [rube/api.systemd.Unit] { description: \"x\" } }\n".into(),
            "error: metadata.name is empty",
        ),
        (
            vec!["put"],
            big.clone(),
            "error: the object is 2097",
        ),
        (
            vec!["put"],
            second_bad,
            "error: object 2 of 2 (api.systemd.Unit system/Bad): metadata.name 'Bad' is not a DNS name",
        ),
        (
            vec!["put"],
            "metadata { name: \"x\" namespace: \"system\" }\nspec { [rube/runink.Herd] { } }\n".into(),
            "error: metadata.namespace: runink.Herd is cluster-scoped and takes no namespace, got 'system'",
        ),
        (vec!["put"], "# nothing here\n".into(), "error: <stdin>:2:1: no object in input"),
        (
            vec!["delete", r#"type = "no.Such", metadata { name: "x" }"#],
            String::new(),
            "error: <argument>:1:9: unknown type 'no.Such'",
        ),
        (
            vec!["delete", "-t", "api.systemd.Unit", "-n", "system", "ghost"],
            String::new(),
            "error: api.systemd.Unit system/ghost not found",
        ),
        (
            vec!["get", "-t", "api.systemd.Unit", "-n", "system", "ghost"],
            String::new(),
            "error: api.systemd.Unit system/ghost not found",
        ),
        (vec!["list", "-t", "no.Such"], String::new(), "error: unknown type 'no.Such'"),
        (
            vec!["list", "-t", "runink.Slice", "-l", "a in (b"],
            String::new(),
            "error: invalid label selector 'a in (b': unbalanced '('",
        ),
    ];
    let before = revision(&server).await;
    for (args, stdin, expected) in cases {
        let run = ructl(&server, &args, &stdin).await;
        assert_ne!(run.code, 0, "ructl {args:?} should fail");
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "one line for {args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr.starts_with(expected),
            "ructl {args:?}:\n  got:  {}  want: {expected}",
            run.stderr
        );
        assert_eq!(run.stdout, "", "nothing on stdout for {args:?}");
        assert_eq!(
            revision(&server).await,
            before,
            "ructl {args:?} moved the store's revision"
        );
    }
    // The first object of the failed batch was not stored either.
    let listed = ok(
        &server,
        &["list", "-t", "api.systemd.Unit", "-o", "table"],
        "",
    )
    .await;
    assert_eq!(listed.lines().count(), 2, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_as_json_table_and_several_objects() {
    let server = TestServer::start().await;
    let two = format!(
        "{SEED_UNIT}---\n{}",
        SEED_UNIT.replace("\"indexer\"", "\"crawler\"")
    );
    assert_eq!(
        ok(&server, &["put"], &two).await,
        "api.systemd.Unit system/indexer created (revision 1)\napi.systemd.Unit system/crawler created (revision 2)\n"
    );
    let json = ok(
        &server,
        &[
            "get",
            "-t",
            "api.systemd.Unit",
            "-n",
            "system",
            "indexer",
            "-o",
            "json",
        ],
        "",
    )
    .await;
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["spec"]["@type"], "rube/api.systemd.Unit");
    assert_eq!(value["spec"]["service"]["type"], "FORKING");

    let listed = ok(
        &server,
        &["list", "-t", "api.systemd.Unit", "-o", "json"],
        "",
    )
    .await;
    let value: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 2);

    let table = ok(
        &server,
        &["get", "-t", "api.systemd.Unit", "-o", "table"],
        "",
    )
    .await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "TYPE",
            "NAMESPACE",
            "NAME",
            "STATUS",
            "GENERATION",
            "REVISION",
            "AGE"
        ]
    );
    assert_eq!(
        rows[1][..6],
        ["api.systemd.Unit", "system", "crawler", "-", "1", "2"]
    );
    assert_eq!(
        rows[2][..6],
        ["api.systemd.Unit", "system", "indexer", "-", "1", "1"]
    );

    // A textproto list is several objects separated by ---, and puts back unchanged.
    let listed = ok(&server, &["list", "-t", "api.systemd.Unit"], "").await;
    assert_eq!(
        listed.matches("\n---\n").count() + usize::from(listed.starts_with("---\n")),
        1,
        "{listed}"
    );
    assert_eq!(
        ok(&server, &["put"], &listed).await,
        "api.systemd.Unit system/crawler unchanged (revision 2)\napi.systemd.Unit system/indexer unchanged (revision 1)\n"
    );

    let types = ok(&server, &["types"], "").await;
    assert!(
        types.contains("api.systemd.Unit         namespaced  api.systemd.UnitStatus"),
        "{types}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_from_a_compacted_revision_fails_clearly() {
    let server = TestServer::start().await;
    ok(&server, &["put"], SEED_UNIT).await;
    ok(
        &server,
        &[
            "delete",
            "-t",
            "api.systemd.Unit",
            "-n",
            "system",
            "indexer",
        ],
        "",
    )
    .await;
    assert_eq!(
        ok(&server, &["compact", "2"], "").await,
        "compacted to revision 2 (current revision 2)\n"
    );
    let run = ructl(
        &server,
        &["watch", "-t", "api.systemd.Unit", "--from-revision", "1"],
        "",
    )
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "error: revision 1 has been compacted (compacted revision 2)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_is_accepted() {
    let server = TestServer::start().await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "textproto") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 5, "examples: {files:?}");
    // Custom types first, so their objects validate.
    ok(
        &server,
        &["register", &format!("{root}/custom/files.proto")],
        "",
    )
    .await;
    // Herds first: they are what the others' namespaces name.
    files.sort_by_key(|p| !p.to_string_lossy().contains("/herds/"));
    for file in files {
        let out = ok(&server, &["put", "-f", file.to_str().unwrap()], "").await;
        assert!(
            out.contains(" created (revision "),
            "{}: {out}",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_types_are_registered_validated_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || TestServer::start_in(dir.path(), Default::default(), Default::default());
    let server = start().await;
    let proto = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/custom/files.proto"
    );
    let motd = include_str!("../../examples/custom/motd.textproto");

    // Before registration the type is unknown.
    let run = ructl(&server, &["put"], motd).await;
    assert_eq!(
        run.stderr,
        "error: <stdin>:13:3: message type 'example.files.File' not found\n"
    );

    assert_eq!(
        ok(&server, &["register", proto], "").await,
        "rube.Type example.files created (revision 1)\n"
    );
    assert_eq!(
        ok(&server, &["put"], motd).await,
        "example.files.File system/motd created (revision 2)\n"
    );
    let got = ok(
        &server,
        &["get", "-t", "example.files.File", "-n", "system", "motd"],
        "",
    )
    .await;
    assert!(
        got.contains("[rube/example.files.File] {") && got.contains("mode: 420"),
        "{got}"
    );
    let types = ok(&server, &["types"], "").await;
    assert!(
        types.contains("example.files.File       namespaced  example.files.FileStatus"),
        "{types}"
    );

    let before = revision(&server).await;
    let bad: Vec<(Vec<&str>, String, &str)> = vec![
        (
            vec!["put"],
            motd.replace("content:", "contnet:"),
            "error: <stdin>:15:5: field 'contnet' not found for message 'example.files.File'",
        ),
        (
            vec!["put"],
            "metadata { name: \"broken\" }\nspec { [rube/rube.Type] { file_descriptor_set: \"garbage\" } }\n".into(),
            "error: type broken: not a FileDescriptorSet",
        ),
        (
            vec!["delete", "-t", "rube.Type", "example.files"],
            String::new(),
            "error: type example.files still has 1 object(s) of kind example.files.File: delete them first",
        ),
        (vec!["get", "-t", "example.nope.File", "-n", "system", "x"], String::new(), "error: unknown type 'example.nope.File'"),
    ];
    for (args, stdin, expected) in bad {
        let run = ructl(&server, &args, &stdin).await;
        assert_ne!(run.code, 0, "ructl {args:?} should fail");
        assert!(
            run.stderr.starts_with(expected),
            "ructl {args:?}:\n  got:  {}  want: {expected}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert_eq!(
            revision(&server).await,
            before,
            "ructl {args:?} moved the revision"
        );
    }
    // A .proto that defines no kind is refused.
    let plain = dir.path().join("plain.proto");
    std::fs::write(
        &plain,
        "syntax = \"proto3\";\npackage example.plain;\nmessage Note { string text = 1; }\n",
    )
    .unwrap();
    let run = ructl(&server, &["register", plain.to_str().unwrap()], "").await;
    assert!(
        run.stderr
            .starts_with("error: type example.plain: its files define no kind"),
        "{}",
        run.stderr
    );
    // A .proto that does not compile names the place.
    std::fs::write(
        &plain,
        "syntax = \"proto3\";\npackage example.plain;\nmessage Note { strin text = 1; }\n",
    )
    .unwrap();
    let run = ructl(&server, &["register", plain.to_str().unwrap()], "").await;
    assert!(
        run.code != 0 && run.stderr.contains("strin"),
        "{}",
        run.stderr
    );

    // Registered types come back after a restart.
    server.stop().await;
    let server = start().await;
    let got = ok(
        &server,
        &["get", "-t", "example.files.File", "-n", "system", "motd"],
        "",
    )
    .await;
    assert!(got.contains("Welcome to a Rube node."), "{got}");
    // Deleting the objects, then the type, makes the kind unknown again.
    ok(
        &server,
        &["delete", "-t", "example.files.File", "-n", "system", "motd"],
        "",
    )
    .await;
    ok(&server, &["delete", "-t", "rube.Type", "example.files"], "").await;
    let run = ructl(&server, &["put"], motd).await;
    assert!(
        run.stderr
            .contains("message type 'example.files.File' not found"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn ructl_config_says_which_file_and_who() {
    let server = TestServer::start().await;
    let shown = ok(&server, &["config"], "").await;
    let path = server.config_path().display().to_string();
    assert!(
        shown.contains(&format!("config:  {path} (given with --config)")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("server:  {}", server.address())),
        "{shown}"
    );
    assert!(shown.contains("user:    admin"), "{shown}");
    assert!(shown.contains("groups:  rube:admins"), "{shown}");
}

#[tokio::test]
async fn without_a_configuration_ructl_says_where_it_looked_and_connects_nowhere() {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ructl"))
        .args(["list", "-t", "runink.Herd"])
        .env_remove("RUBE_CONFIG")
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no client configuration"), "{stderr}");
    assert!(
        stderr.contains(
            &home
                .path()
                .join("data/rube/admin.conf")
                .display()
                .to_string()
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_broken_configuration_is_named_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.conf");
    std::fs::write(&broken, "server: \"127.0.0.1:1\"\nca_pem: oops\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ructl"))
        .arg("--config")
        .arg(&broken)
        .args(["list", "-t", "runink.Herd"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: 2:", broken.display())),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_herd_created_for_an_owner_is_theirs_and_nothing_else_is() {
    let server = TestServer::start().await;
    let made = ok(
        &server,
        &["herd", "create", "team-a", "--owner", "alice"],
        "",
    )
    .await;
    assert!(made.contains("runink.Herd team-a created"), "{made}");
    assert!(
        made.contains("rube.RoleBinding team-a/owners created"),
        "{made}"
    );
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice.conf");
    rubeapi::config::save(&alice, &server.config_for("alice", None)).unwrap();
    let slice = |ns: &str| {
        format!(
            "metadata {{ namespace: \"{ns}\" name: \"s\" }}\nspec {{ [rube/runink.Slice] {{ command: \"/bin/true\" }} }}\n"
        )
    };
    let mine = ructl_with(&alice, &["put"], &slice("team-a")).await;
    assert_eq!(mine.code, 0, "{}", mine.stderr);
    let refused = ructl_with(&alice, &["put"], &slice("team-b")).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("alice may not create runink.Slice in namespace team-b"),
        "{}",
        refused.stderr
    );
    let herd = ructl_with(&alice, &["get", "-t", "runink.Herd", "team-a"], "").await;
    assert_eq!(herd.code, 0, "{}", herd.stderr);
    // A second create of the same Herd changes nothing.
    let again = ructl(
        &server,
        &["herd", "create", "team-a", "--owner", "mallory"],
        "",
    )
    .await;
    assert_eq!(again.code, 1, "{}", again.stdout);
    let bindings = ok(
        &server,
        &["get", "-t", "rube.RoleBinding", "-n", "team-a", "owners"],
        "",
    )
    .await;
    assert!(!bindings.contains("mallory"), "{bindings}");
}
