package main

import (
	"path/filepath"
	"strings"
	"testing"
)

const checkDir = "../../deploy/argocd/resource_customizations/regcred.dev/RegistryCredential"

func TestArgoCDHealthTestsPass(t *testing.T) {
	cases, failures, err := runHealthTests(checkDir)
	if err != nil {
		t.Fatal(err)
	}
	if cases < 10 {
		t.Fatalf("only %d cases in health_test.yaml", cases)
	}
	for _, f := range failures {
		t.Error(f)
	}
}

// The VM must be as strict as Argo CD's: a script that leans on a library Argo CD does not open
// fails here too.
func TestVMOpensOnlyWhatArgoCDOpens(t *testing.T) {
	obj := map[string]interface{}{"metadata": map[string]interface{}{"name": "x"}}
	for _, script := range []string{
		`return {status = string.format("%s", "Healthy")}`,
		`return {status = ("Healthy"):lower()}`,
		`io.write("x") return {status = "Healthy"}`,
		`os.execute("true") return {status = "Healthy"}`,
	} {
		if _, err := argoHealth(script, obj); err == nil {
			t.Errorf("%s: ran, but Argo CD's VM has no such library", script)
		}
	}
	h, err := argoHealth(`local t = {} table.insert(t, "Healthy") return {status = t[1], message = "a" .. 1}`, obj)
	if err != nil || h.Status != "Healthy" || h.Message != "a1" {
		t.Errorf("base and table libraries: %+v, %v", h, err)
	}
	h, err = argoHealth(`return {status = "Fine"}`, obj)
	if err != nil || h.Status != "Unknown" {
		t.Errorf("an unknown status becomes Unknown, as in Argo CD: %+v, %v", h, err)
	}
	if _, err := argoHealth(`while true do end`, obj); err == nil {
		t.Error("a script that never ends must be stopped")
	}
}

// What Flux's health checks (kstatus) make of the same objects.
func TestKstatusOfTheTestdata(t *testing.T) {
	for file, want := range map[string]string{
		// kstatus cannot tell "no status yet" from "nothing to report": the operator writes its
		// first status within a moment of the object's creation.
		"progressing_noStatus.yaml":             "Current",
		"healthy_synced.yaml":                   "Current",
		"progressing_generationLag.yaml":        "InProgress",
		"progressing_fanOut.yaml":               "InProgress",
		"degraded_invalidSource.yaml":           "Failed",
		"degraded_conflict.yaml":                "Failed",
		"degraded_failingNamespace.yaml":        "InProgress",
		"suspended.yaml":                        "Failed",
		"progressing_deleting.yaml":             "Terminating",
		"degraded_serviceAccountContested.yaml": "Failed",
	} {
		object, err := readObjectFile(filepath.Join(checkDir, "testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		got, err := fluxStatus(object)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != want {
			t.Errorf("%s: kstatus %s (%s), want %s", file, got.Status, got.Message, want)
		}
	}
}

func TestDecodesListsAndSingleObjects(t *testing.T) {
	objects, err := decodeObjects([]byte(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"regcred.dev/v1alpha1","kind":"RegistryCredential","metadata":{"name":"a"}},{"apiVersion":"regcred.dev/v1alpha1","kind":"RegistryCredential","metadata":{"name":"b"}}]}`))
	if err != nil || len(objects) != 2 || objects[1].GetName() != "b" {
		t.Fatalf("%v %v", objects, err)
	}
	objects, err = decodeObjects([]byte("apiVersion: regcred.dev/v1alpha1\nkind: RegistryCredential\nmetadata: {name: a}\n"))
	if err != nil || len(objects) != 1 || !strings.EqualFold(objects[0].GetKind(), "RegistryCredential") {
		t.Fatalf("%v %v", objects, err)
	}
}
