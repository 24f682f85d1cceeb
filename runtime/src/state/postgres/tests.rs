//! The PostgreSQL store against a real server this test starts (`tests/support/postgres.rs`:
//! Debian's `postgresql`, which `.ci/run` installs). Without the server's programs the tests
//! skip, saying so.

#[path = "../../../../tests/support/postgres.rs"]
mod server;

use server::server;

use super::super::spec;
use super::super::StateStore;
use super::*;

#[tokio::test]
async fn writes_are_compare_and_set_on_a_real_server() {
    let Some(server) = server("writes_are_compare_and_set_on_a_real_server") else {
        return;
    };
    let store = open(&server.url).await.expect("connects");
    assert_eq!(store.describe(), server.url);
    spec::compare_and_set(&store).await;
    spec::reminders(&store).await;
    // Two connections, as two nodes on two hosts would hold.
    let other = open(&server.url).await.expect("a second connection");
    spec::shared(&store, &other).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_start_at_once_all_open_a_fresh_database() {
    let Some(server) = server("nodes_that_start_at_once_all_open_a_fresh_database") else {
        return;
    };
    // Each open makes the table if it is missing: without the lock, one of them fails on
    // the catalog's unique index.
    let opens = (0..8).map(|_| tokio::spawn(open_owned(server.url.clone())));
    for opened in futures_util::future::join_all(opens).await {
        let opened = opened.expect("the task ran");
        assert!(opened.is_ok(), "{:?}", opened.err());
    }
    drop(server);
}

async fn open_owned(url: String) -> Result<(), StoreError> {
    open(&url).await.map(drop)
}

#[tokio::test]
async fn a_server_that_went_away_is_unavailable_and_nothing_hangs() {
    let Some(server) = server("a_server_that_went_away_is_unavailable_and_nothing_hangs") else {
        return;
    };
    let store = open(&server.url).await.expect("connects");
    assert_eq!(
        store.write(vec![spec::put("c", "k", "v", 0)]).await,
        [Ok(1)]
    );
    drop(server); // stopped, its folder gone
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), store.read("c", "k"))
        .await
        .expect("an answer, not a hang");
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
}

#[test]
fn a_password_is_not_shown() {
    assert_eq!(
        without_password("postgres://app:s3cret@db:5432/state"),
        "postgres://app:…@db:5432/state"
    );
    assert_eq!(
        without_password("postgres://app@db/state"),
        "postgres://app@db/state"
    );
}

#[tokio::test]
async fn a_key_no_row_can_hold_is_refused_alone() {
    let Some(server) = server("a_key_no_row_can_hold_is_refused_alone") else {
        return;
    };
    let store = open(&server.url).await.expect("connects");
    let long = "k".repeat(5000);
    for bad in ["nul\0key", long.as_str()] {
        let refused = store.write(vec![spec::put("c", bad, "v", 0)]).await;
        assert!(
            matches!(refused[..], [Err(StoreError::Unavailable(_))]),
            "{refused:?}"
        );
        assert!(store.read("c", bad).await.is_err());
    }
    // The store goes on for everyone else.
    assert_eq!(
        store.write(vec![spec::put("c", "fine", "v", 0)]).await,
        [Ok(1)]
    );
    drop(server);
}
