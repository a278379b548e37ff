-- A second service's schema, applied beside the conformance one in the same database.
CREATE TABLE other_notes (
    note TEXT PRIMARY KEY
);
