//! The transitions of a run, each one function that runs its transaction
//! and then its effects after the commit (the cache, queue tickets, the
//! announcements to the run's readers) in one place. The API and the
//! worker call these; `db` holds their SQL.
//!
//! - [`finish`]: an attempt ends its run (answered, failed or stopped);
//!   a cancel accepted before it always wins.

mod finish;

pub use finish::{Ending, Finished, Produced, finish};
