//! Where the bytes live: fragments in memfd regions (`header | index | log`).
//! `layout` is the byte format, `region` the mapping, `fragment` the operations,
//! `rebuild` splits and compactions in slices, `reap` drops replaced regions off the core.

pub mod copy;
pub mod fragment;
pub mod hash;
pub mod layout;
pub mod reap;
pub mod rebuild;
pub mod region;

pub use copy::{CopyError, CopyHeader};
pub use fragment::{Fragment, FragmentId, Geometry, StoreError};
pub use hash::HashView;
pub use layout::RecordView;
pub use rebuild::{Rebuild, Rebuilt, SliceWork};
