package verify

import (
	_ "github.com/moby/buildkit/frontend/dockerfile/parser"
	_ "go.starlark.net/starlark"
	_ "k8s.io/client-go/kubernetes/scheme"
	_ "k8s.io/apimachinery/pkg/runtime/serializer/json"
	_ "sigs.k8s.io/kustomize/api/krusty"
	_ "sigs.k8s.io/kustomize/kyaml/filesys"
)
