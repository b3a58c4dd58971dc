//! `hereabouts store dump|check [--data-dir D]`: the node's embedded store, for people.
//!
//! `dump` prints it as a Kubernetes `List` of Whereabouts' `IPPool` and
//! `OverlappingRangeIPReservation` objects (the shape people know from the cluster; JSON);
//! `check` runs SQLite's integrity check and exits non-zero, naming the file, when it fails.
//! Neither creates a store or changes one.

use std::path::PathBuf;

use hereabouts_host::bindings::describe_store_error;
use hereabouts_stores::sqlite::{DATABASE_FILE, DEFAULT_DATA_DIR, SqliteStore};

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Print every pool and reservation as Whereabouts' objects (JSON).
    Dump(DataDir),
    /// Run SQLite's integrity check on the store; exit 1 if it fails.
    Check(DataDir),
}

#[derive(Debug, clap::Args)]
pub struct DataDir {
    /// The store's directory (the ipam config's `data_dir`).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

pub fn exec(args: &StoreArgs) -> i32 {
    match &args.command {
        StoreCommand::Dump(dir) => dump(dir),
        StoreCommand::Check(dir) => check(dir),
    }
}

fn dump(dir: &DataDir) -> i32 {
    let path = dir.data_dir.join(DATABASE_FILE);
    if !path.exists() {
        // No plugin call has written here yet: nothing is allocated.
        eprintln!("hereabouts store dump: no store at {} yet: nothing allocated", path.display());
        println!("{}", serde_json::json!({"apiVersion": "v1", "kind": "List", "items": []}));
        return 0;
    }
    match SqliteStore::open_existing(&dir.data_dir).and_then(|mut store| store.dump()) {
        Ok(list) => {
            println!("{}", serde_json::to_string_pretty(&list).expect("serialisable"));
            0
        }
        Err(e) => {
            eprintln!("hereabouts store dump: {}", describe_store_error(&e));
            1
        }
    }
}

fn check(dir: &DataDir) -> i32 {
    match SqliteStore::open_existing(&dir.data_dir).and_then(|store| {
        store.integrity_check()?;
        Ok(store)
    }) {
        Ok(store) => {
            println!("{}: integrity check ok", store.path().display());
            0
        }
        Err(e) => {
            eprintln!("hereabouts store check: {}", describe_store_error(&e));
            1
        }
    }
}
