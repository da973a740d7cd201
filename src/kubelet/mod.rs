//! The kubelet's rules, and nothing else: how it reads an image reference, how it reads the
//! keys of a pull secret's `auths` map, its host globs, and which keys it uses for an image.
//!
//! Pure code with no I/O; it never sees a credential, only keys and image names.

mod matching;
mod registry_key;

pub use matching::*;
pub use registry_key::*;
