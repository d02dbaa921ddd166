//! VM test support.
