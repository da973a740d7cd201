//! What the controller knows of the cluster between passes: the watch caches, [`index`]es over
//! them kept up to date by the same watch events, and [`overlay`], our own recent writes laid
//! over them until the watches catch up.

pub(crate) mod index;
pub(crate) mod overlay;
