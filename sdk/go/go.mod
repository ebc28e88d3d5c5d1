module github.com/fedsync/fedsync/sdk/go

go 1.26.7

toolchain go1.26.11

require github.com/coder/websocket v1.8.15
