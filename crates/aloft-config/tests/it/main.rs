//! Integration tests of the fly.toml engine: rules, limits, properties and the corpus.
//!
//! One test binary per crate (`cargo test -p aloft-config --test it [module::]`), a module per area.

mod corpus;
mod limits;
mod proptest;
mod rules;
