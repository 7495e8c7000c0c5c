//! Leader election against a real apiserver (in-process, sqlite, port 0): one candidate leads
//! at a time; a leader that releases hands over at once; a leader that dies is replaced after
//! the lease duration; a leader that cannot renew stops its work.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::testing::TestServer;
use rubelet::election::{Timing, lead};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Who is running its work right now, in order of starting.
#[derive(Clone, Default)]
struct Leaders(Arc<Mutex<Vec<(String, bool)>>>);

impl Leaders {
    fn running(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, running)| *running)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn started(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
}

fn timing() -> Timing {
    Timing {
        duration: Duration::from_millis(1500),
        renew_every: Duration::from_millis(100),
        renew_deadline: Duration::from_millis(1000),
    }
}

fn candidate(
    client: rubeapi::Client,
    me: &str,
    leaders: &Leaders,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let leaders = leaders.clone();
    let me = me.to_owned();
    tokio::spawn(lead(
        client,
        "controller-test".to_owned(),
        me.clone(),
        timing(),
        cancel,
        move |lost: CancellationToken| {
            let leaders = leaders.clone();
            let me = me.clone();
            async move {
                let index = {
                    let mut all = leaders.0.lock().unwrap();
                    let running = all.iter().filter(|(_, r)| *r).count();
                    assert_eq!(running, 0, "{me} leads while another still runs: {all:?}");
                    all.push((me.clone(), true));
                    all.len() - 1
                };
                lost.cancelled().await;
                leaders.0.lock().unwrap()[index].1 = false;
            }
        },
    ))
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_a_release_hands_over_at_once_and_a_death_after_the_lease() {
    let server = TestServer::start().await;
    let leaders = Leaders::default();
    let cancel = [
        CancellationToken::new(),
        CancellationToken::new(),
        CancellationToken::new(),
    ];
    let mut tasks = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        tasks.push(candidate(
            server.client().await,
            name,
            &leaders,
            cancel[i].clone(),
        ));
    }
    until("a leader", || leaders.running().len() == 1).await;
    // Several renewal periods later, still the same single leader.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(leaders.started().len(), 1, "{:?}", leaders.started());
    let first = leaders.running()[0].clone();
    let index = ["a", "b", "c"].iter().position(|n| *n == first).unwrap();

    // A graceful stop releases the lease: another leads well before the lease would expire.
    let released = tokio::time::Instant::now();
    cancel[index].cancel();
    until("a second leader", || leaders.started().len() == 2).await;
    assert!(
        released.elapsed() < timing().duration,
        "took {:?}",
        released.elapsed()
    );
    let second = leaders.running()[0].clone();
    assert_ne!(second, first);

    // A crash (the task is gone, nothing released): the last one waits out the lease.
    let index = ["a", "b", "c"].iter().position(|n| *n == second).unwrap();
    tasks[index].abort();
    let _ = (&mut tasks[index]).await;
    // An aborted task never ran its cleanup; mark it stopped for the bookkeeping.
    leaders
        .0
        .lock()
        .unwrap()
        .iter_mut()
        .for_each(|l| l.1 = false);
    let died = tokio::time::Instant::now();
    until("a third leader", || leaders.started().len() == 3).await;
    assert!(
        died.elapsed() >= timing().duration - Duration::from_millis(200),
        "took over after {:?}",
        died.elapsed()
    );
    let third = leaders.running()[0].clone();
    assert!(third != first && third != second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_its_work() {
    let server = TestServer::start().await;
    let leaders = Leaders::default();
    let cancel = CancellationToken::new();
    let _task = candidate(server.client().await, "a", &leaders, cancel.clone());
    until("a leader", || leaders.running().len() == 1).await;
    server.stop().await;
    let stopped = tokio::time::Instant::now();
    until("the leader to stop its work", || {
        leaders.running().is_empty()
    })
    .await;
    // Before anyone else could take the lease over.
    assert!(
        stopped.elapsed() < timing().duration,
        "stopped after {:?}",
        stopped.elapsed()
    );
    cancel.cancel();
}
