//! Unit tests of the eStargz format module.
