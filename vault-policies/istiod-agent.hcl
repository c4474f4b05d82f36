# istiod-vault-agent: have the PKI engine sign the agent's intermediate CA (the key stays in the agent).
# Nothing broader: no issue/*, no sys/*, no reads of other mounts. Token lookup/renew come from `default`.
path "pki/root/sign-intermediate" {
  capabilities = ["update"]
}
