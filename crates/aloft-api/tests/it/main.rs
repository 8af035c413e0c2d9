//! Integration tests of the wire types against Fly's published API schema.

mod fly_schema;
