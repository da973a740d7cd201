//! The kubelet's rules, and nothing else: how it reads an image reference ([`image`]), how it
//! reads the keys of a pull secret's `auths` map ([`keys`], [`glob`]), which keys it uses for an
//! image ([`matching`]), and the operator's own strict validation of keys ([`registry_key`]).
//!
//! Pure code with no I/O; it never sees a credential, only keys, image names and pod status.

mod glob;
mod image;
mod keys;
mod matching;
mod pull_waits;
mod registry_key;
#[cfg(test)]
mod tests;

pub use image::*;
pub use keys::unmatchable_key;
pub use matching::*;
pub use pull_waits::{PullWait, pull_waits};
pub use registry_key::*;
