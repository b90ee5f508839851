//! The client-facing side: `connection` (read → parse → execute → reply),
//! `conn_cmd` (commands a connection answers itself), `info` (INFO text),
//! `admin` (the `/metrics` endpoint).

pub mod admin;
pub mod conn_cmd;
pub mod connection;
pub mod info;
pub mod peer;
pub mod status;
pub mod txn;
