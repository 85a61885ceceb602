// Command kstatus prints, for each Kubernetes object it reads, the status that kstatus
// (sigs.k8s.io/cli-utils, as kubectl/cli-utils and Flux's default health checks compute
// it) and Flux's healthCheckExprs (Flux's own CEL evaluator) give it. The integration
// tests run it on real catalogsync objects (see hack/kstatus.sh).
//
//	kstatus FLUX_YAML < objects.json
//
// FLUX_YAML is a multi-document YAML file whose Kustomizations carry
// spec.healthCheckExprs (deploy/flux/catalogsync.yaml). The input is one JSON array of
// objects; the output one JSON object per input object, in order, one per line:
// {"kind", "name", "kstatus", "message", "flux", "fluxError"}.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Kstatus   string `json:"kstatus"`
	Message   string `json:"message"`
	Flux      string `json:"flux"`
	FluxError string `json:"fluxError,omitempty"`
}

// The healthCheckExprs entries of every Kustomization in the file, by apiVersion/kind.
func readExprs(path string) (map[string]kustomize.CustomHealthCheck, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]kustomize.CustomHealthCheck{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var doc struct {
			Kind string `json:"kind"`
			Spec struct {
				HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
			} `json:"spec"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		for _, c := range doc.Spec.HealthCheckExprs {
			out[c.APIVersion+"/"+c.Kind] = c
		}
	}
}

func evaluate(exprs map[string]kustomize.CustomHealthCheck, obj map[string]any) result {
	u := &unstructured.Unstructured{Object: obj}
	r := result{Kind: u.GetKind(), Name: u.GetName()}
	res, err := status.Compute(u)
	if err != nil {
		r.Kstatus, r.Message = "Error", err.Error()
	} else {
		r.Kstatus, r.Message = res.Status.String(), res.Message
	}
	check, ok := exprs[u.GetAPIVersion()+"/"+u.GetKind()]
	if !ok {
		r.Flux = "NoExprs"
		return r
	}
	if r.Flux, err = fluxStatus(check, u); err != nil {
		// Flux takes an evaluation error as the object's status being unknown: the
		// Kustomization keeps waiting until its timeout.
		r.Flux, r.FluxError = "Unknown", err.Error()
	}
	return r
}

// The status Flux's kustomize-controller gives the object with these expressions.
func fluxStatus(check kustomize.CustomHealthCheck, u *unstructured.Unstructured) (string, error) {
	ev, err := fluxcel.NewStatusEvaluator(&check.HealthCheckExpressions)
	if err != nil {
		return "", err
	}
	res, err := ev.Evaluate(context.Background(), u)
	if err != nil {
		return "", err
	}
	return res.Status.String(), nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kstatus FLUX_YAML < objects.json")
		os.Exit(2)
	}
	exprs, err := readExprs(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
	// Integers as int64, as the API machinery reads them (kstatus insists).
	var objects []map[string]any
	raw, err := io.ReadAll(os.Stdin)
	if err == nil {
		err = utiljson.Unmarshal(raw, &objects)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading objects:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	for _, o := range objects {
		if err := enc.Encode(evaluate(exprs, o)); err != nil {
			os.Exit(1)
		}
	}
}
