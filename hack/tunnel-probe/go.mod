module nestor.dev/tunnel-probe

go 1.24
