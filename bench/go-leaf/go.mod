module istiod-vault-agent/bench/go-leaf

go 1.26
