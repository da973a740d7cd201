// regcred-gitops judges RegistryCredentials with the GitOps tools' own engines: Argo CD's Lua
// health check (gopher-lua, configured as Argo CD configures it) and Flux's kstatus.
//
//	regcred-gitops argocd-test <dir>          run <dir>/health_test.yaml against <dir>/health.lua
//	regcred-gitops argocd <health.lua> < obj  print the Argo CD health of each object read
//	regcred-gitops kstatus < obj              print the kstatus of each object read
//
// Objects are read as JSON or YAML from stdin: one object, or a List with items. The output is
// one JSON line per object: {"name": ..., "status": ..., "message": ...}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "regcred-gitops:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: regcred-gitops argocd-test <dir> | argocd <health.lua> | kstatus")
	}
	switch args[0] {
	case "argocd-test":
		if len(args) != 2 {
			return fmt.Errorf("usage: regcred-gitops argocd-test <dir>")
		}
		cases, failures, err := runHealthTests(args[1])
		if err != nil {
			return err
		}
		for _, f := range failures {
			fmt.Println("FAIL", f)
		}
		if len(failures) > 0 {
			return fmt.Errorf("%d of %d health tests failed", len(failures), cases)
		}
		fmt.Printf("ok: %d health tests\n", cases)
		return nil
	case "argocd":
		if len(args) != 2 {
			return fmt.Errorf("usage: regcred-gitops argocd <health.lua>")
		}
		script, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		return judge(func(o map[string]interface{}) (Health, error) { return argoHealth(string(script), o) })
	case "kstatus":
		return judge(fluxStatus)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func judge(assess func(map[string]interface{}) (Health, error)) error {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	objects, err := decodeObjects(raw)
	if err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	for _, o := range objects {
		h, err := assess(o.Object)
		if err != nil {
			return fmt.Errorf("%s: %w", o.GetName(), err)
		}
		if err := out.Encode(map[string]string{"name": o.GetName(), "status": h.Status, "message": h.Message}); err != nil {
			return err
		}
	}
	return nil
}

func decodeObjects(raw []byte) ([]unstructured.Unstructured, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, err
	}
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, err
	}
	if u.IsList() {
		list, err := u.ToList()
		if err != nil {
			return nil, err
		}
		return list.Items, nil
	}
	return []unstructured.Unstructured{u}, nil
}
