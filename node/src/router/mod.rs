//! Where a key lives: the route table maps key ranges to the core that owns them
//! (binary search on the dividers); each core keeps an `Arc` snapshot.

pub mod table;
