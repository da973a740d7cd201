package main

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// fluxStatus is what Flux's health checks (kstatus) make of an object.
func fluxStatus(object map[string]interface{}) (Health, error) {
	result, err := status.Compute(&unstructured.Unstructured{Object: object})
	if err != nil {
		return Health{}, err
	}
	return Health{Status: result.Status.String(), Message: result.Message}, nil
}
