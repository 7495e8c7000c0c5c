//! The fixpoint property of the example controller, without I/O: applying reconcile's effects
//! and reconciling again yields nothing. And the executor's file half agrees with the pure
//! model that property relies on.

mod slice_files;

use controllers::Key;
use proptest::prelude::*;
use rubeapi::object::ObjectExt;
use rubeapi::rube::Object;
use rubeapi::runink::slice_status::Phase;
use rubeapi::runink::{Slice, SliceStatus};
use slice_files::{Effect, Observed, command_line, reconcile, simulate};

const NODE: &str = "n1";

fn slice_object(command: String, args: Vec<String>, generation: u64) -> Object {
    rubeapi::testing::slice("ns", "s")
        .spec(|s| {
            s.command = command;
            s.args = args;
        })
        .generation(generation)
        .build()
}

fn desired() -> impl Strategy<Value = Option<Object>> {
    let slice = (
        "[a-z/]{0,8}",
        proptest::collection::vec("[a-z-]{0,4}", 0..3),
        1..4u64,
    )
        .prop_map(|(command, args, generation)| slice_object(command, args, generation));
    // A spec that is not a Slice at all, to reach the failure branch.
    let broken = (1..4u64).prop_map(|generation| {
        let mut object = slice_object(String::new(), vec![], generation);
        if let Some(spec) = object.spec.as_mut() {
            spec.type_url = "rube/runink.Herd".into();
        }
        object
    });
    prop_oneof![
        Just(None),
        slice.clone().prop_map(Some),
        broken.prop_map(Some)
    ]
}

fn status() -> impl Strategy<Value = SliceStatus> {
    (
        prop_oneof![
            Just(Phase::Pending),
            Just(Phase::Failed),
            Just(Phase::Running)
        ],
        prop_oneof![Just(NODE.to_owned()), Just("n2".to_owned())],
        prop_oneof![
            Just("command file written".to_owned()),
            "[a-z ]{0,10}".prop_map(String::from)
        ],
        0..4u64,
    )
        .prop_map(|(phase, node, message, observed_generation)| SliceStatus {
            phase: phase as i32,
            node,
            message,
            observed_generation,
            ..Default::default()
        })
}

/// Any world, including ones that already match `desired` in part.
fn observed(desired: Option<Object>) -> impl Strategy<Value = (Option<Object>, Observed)> {
    let matching_file = desired
        .as_ref()
        .and_then(|o| o.spec_as::<Slice>().ok())
        .map(|slice| command_line(&slice));
    let file = prop_oneof![
        Just(None),
        Just(matching_file),
        "[a-z /\n]{0,12}".prop_map(Some),
    ];
    let status = proptest::option::of(status());
    (file, status).prop_map(move |(file, status)| (desired.clone(), Observed { file, status }))
}

fn case() -> impl Strategy<Value = (Option<Object>, Observed)> {
    desired().prop_flat_map(observed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn applying_the_effects_reaches_a_fixpoint((desired, observed) in case()) {
        let effects = reconcile(NODE, desired.as_ref(), &observed);
        let after = simulate(&observed, &effects);
        let again = reconcile(NODE, desired.as_ref(), &after);
        prop_assert!(again.is_empty(), "effects {effects:?} left {again:?} to do");
    }

    #[test]
    fn a_world_at_the_fixpoint_asks_for_nothing((desired, observed) in case()) {
        let at_fixpoint = simulate(&observed, &reconcile(NODE, desired.as_ref(), &observed));
        // Reconciling what is already right must not even rewrite it.
        prop_assert_eq!(reconcile(NODE, desired.as_ref(), &at_fixpoint), vec![]);
        prop_assert_eq!(&simulate(&at_fixpoint, &[]), &at_fixpoint);
    }

    /// Reaching some fixpoint is not enough: it must be the world the spec asks for.
    #[test]
    fn the_fixpoint_is_the_world_the_spec_asks_for((desired, observed) in case()) {
        let after = simulate(&observed, &reconcile(NODE, desired.as_ref(), &observed));
        let Some(object) = desired else {
            prop_assert_eq!(after.file, None);
            return Ok(());
        };
        let generation = object.metadata.as_ref().unwrap().generation;
        let status = after.status.expect("a status");
        prop_assert_eq!(status.observed_generation, generation);
        prop_assert_eq!(&status.node, NODE);
        match object.spec_as::<Slice>() {
            Ok(slice) => {
                prop_assert_eq!(after.file, Some(command_line(&slice)));
                prop_assert_eq!(status.phase, Phase::Pending as i32);
            }
            Err(_) => {
                prop_assert_eq!(after.file, None);
                prop_assert_eq!(status.phase, Phase::Failed as i32);
            }
        }
    }

    #[test]
    fn a_deleted_slice_leaves_no_file((_, observed) in case()) {
        let after = simulate(&observed, &reconcile(NODE, None, &observed));
        prop_assert_eq!(after.file, None);
    }
}

#[test]
fn the_status_is_written_after_the_file() {
    let desired = slice_object("/bin/true".into(), vec!["-v".into()], 3);
    let effects = reconcile(NODE, Some(&desired), &Observed::default());
    assert_eq!(effects.len(), 2);
    assert_eq!(effects[0], Effect::WriteFile("/bin/true -v\n".into()));
    let Effect::WriteStatus(status) = &effects[1] else {
        panic!("expected a status, got {effects:?}");
    };
    assert_eq!(status.observed_generation, 3);
    assert_eq!(status.node, NODE);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The fixpoint property is about the model; this checks the real file executor against it.
    #[test]
    fn the_file_executor_agrees_with_the_model(
        start in proptest::option::of("[a-z \n]{0,12}"),
        effects in proptest::collection::vec(
            prop_oneof![
                "[a-z \n]{0,12}".prop_map(Effect::WriteFile),
                Just(Effect::RemoveFile),
            ],
            0..4,
        ),
    ) {
        let root = tempfile::tempdir().unwrap();
        let key = Key::typed::<Slice>("ns", "s");
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let seen = runtime.block_on(async {
            if let Some(content) = &start {
                slice_files::execute_file(root.path(), &key, &Effect::WriteFile(content.clone()))
                    .await
                    .unwrap();
            }
            let before = slice_files::observe_file(root.path(), &key).await.unwrap();
            for effect in &effects {
                slice_files::execute_file(root.path(), &key, effect).await.unwrap();
            }
            (before, slice_files::observe_file(root.path(), &key).await.unwrap())
        });
        let before = Observed { file: seen.0, status: None };
        prop_assert_eq!(&before.file, &start);
        prop_assert_eq!(simulate(&before, &effects).file, seen.1);
    }
}
