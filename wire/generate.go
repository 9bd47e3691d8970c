package wire

//go:generate ./gen.sh
