// Package depcheck holds the test that enforces the import rules of
// DESIGN.md "Tiers and packages": wire is a leaf, core imports only the
// standard library, storage and push build on core, edge translates wire to
// core, client speaks only wire over QUIC, and bench goes through client.
package depcheck
