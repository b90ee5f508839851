//! The client-facing side: `connection` (read → parse → execute → reply),
//! `conn_cmd` (commands a connection answers itself), `info` (INFO text),
//! `clients` (the registry behind CLIENT LIST and maxclients).

pub mod clients;
pub mod conn_cmd;
pub mod connection;
pub mod info;
