//! The store contract against a real PostgreSQL (SQLite runs it in `shared`).

use e2e::TestDb;
use shared::store::Store;

#[tokio::test]
async fn postgres_store_passes_the_contract() {
    let db = TestDb::create().await;
    let store = Store::connect(&db.url(), 4).await.unwrap();
    shared::store::contract::run_all(&store).await;
}
