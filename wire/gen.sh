#!/bin/sh
# Regenerates tern.pb.go from tern.proto. Run through `go generate ./wire`.
# protoc comes from the system (Debian: protobuf-compiler); protoc-gen-go is
# built from the google.golang.org/protobuf version pinned in go.mod, so the
# output only depends on those two versions.
set -eu
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
protoc --plugin=protoc-gen-go="$bin/protoc-gen-go" --go_out=. --go_opt=paths=source_relative tern.proto
