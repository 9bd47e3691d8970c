package e2e

import "github.com/ternhq/tern/storage"

func storageShards(n int) storage.Options { return storage.Options{Shards: n} }
