// Runs an Argo CD health.lua in gopher-lua, the Lua VM Argo CD embeds, with the libraries
// Argo CD opens for argocd-cm health checks (tests/unit/test_argocd_health.py builds it).
module trainwright.io/hack/argocd-luacheck

go 1.22

require github.com/yuin/gopher-lua v1.1.1
