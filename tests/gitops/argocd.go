package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

// Health is what an Argo CD health script returns.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// Argo CD's health states (gitops-engine pkg/health).
var healthStates = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

// argoHealth runs a health script the way Argo CD runs one configured in argocd-cm
// (`resource.customizations.health.<group>_<kind>`, useOpenLibs unset): the standard libraries are
// skipped and only package, base and table are opened (Argo CD adds a reduced os library, which
// this VM leaves out, so a script passing here uses none of it); the object is the global `obj`;
// the script has one second; its result must be a table with a known status.
func argoHealth(script string, object map[string]interface{}) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage,
		lua.BaseLibName: lua.OpenBase,
		lua.TabLibName:  lua.OpenTable,
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(open), NRet: 0, Protect: true}, lua.LString(name)); err != nil {
			return Health{}, fmt.Errorf("opening %s: %w", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, object))
	if err := l.DoString(script); err != nil {
		return Health{}, err
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	h := Health{}
	if s, ok := result.RawGetString("status").(lua.LString); ok {
		h.Status = string(s)
	}
	switch m := result.RawGetString("message").(type) {
	case lua.LString:
		h.Message = string(m)
	case *lua.LNilType:
	default:
		return Health{}, fmt.Errorf("message is a %s, not a string", m.Type())
	}
	if !healthStates[h.Status] {
		// What Argo CD makes of an unknown status.
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

// toLua converts a decoded JSON/unstructured value into Lua values.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	case []interface{}:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetString(key, toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

// healthTests is health_test.yaml in Argo CD's layout.
type healthTests struct {
	Tests []struct {
		HealthStatus Health `json:"healthStatus"`
		InputPath    string `json:"inputPath"`
	} `json:"tests"`
}

// runHealthTests runs every case of <dir>/health_test.yaml against <dir>/health.lua and
// returns one line per failing case.
func runHealthTests(dir string) (cases int, failures []string, err error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return 0, nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return 0, nil, err
	}
	var tests healthTests
	if err := yaml.UnmarshalStrict(raw, &tests); err != nil {
		return 0, nil, fmt.Errorf("health_test.yaml: %w", err)
	}
	for _, test := range tests.Tests {
		object, err := readObjectFile(filepath.Join(dir, test.InputPath))
		if err != nil {
			return 0, nil, err
		}
		got, err := argoHealth(string(script), object)
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", test.InputPath, err))
			continue
		}
		if got != test.HealthStatus {
			failures = append(failures, fmt.Sprintf("%s: got %+v, want %+v", test.InputPath, got, test.HealthStatus))
		}
	}
	return len(tests.Tests), failures, nil
}

func readObjectFile(path string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	objects, err := decodeObjects(raw)
	if err != nil || len(objects) != 1 {
		return nil, fmt.Errorf("%s: want one object: %v", path, err)
	}
	return objects[0].Object, nil
}
