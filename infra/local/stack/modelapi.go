package stack

import "fmt"

// ModelAPI deploys the template with a model API (its ModelApi* parameters), as an
// operator deploys it: the key stored in the stack's Secrets Manager under
// ModelKeySecretName, the template naming the secret's ARN. ECS then reads the key
// with the task execution role and hands it to each sandbox's agent, whose proxy adds
// it to the workload's calls (internal/apiproxy).
type ModelAPI struct {
	// URL is ModelApiUrl: https, or http to a loopback address (infra/local/modelstub).
	URL string
	// Key is the secret's value.
	Key string
	// Header is ModelApiAuthHeader (the template's default when empty).
	Header string
	// Params are further ModelApi* parameters (ModelApiRateLimit, ModelApiSpendLimit,
	// ModelApiSpendWindow).
	Params map[string]string
}

// ModelKeySecretName is the secret holding the local model API's key.
const ModelKeySecretName = "sandgate/model-api-key"

// startModelAPI stores m's key and returns the template parameters that deploy it.
func (s *Stack) startModelAPI(m *ModelAPI) (map[string]string, error) {
	if m == nil {
		return nil, nil
	}
	if m.URL == "" || m.Key == "" {
		return nil, fmt.Errorf("model api: want a URL and a key")
	}
	arn, err := s.ids.secrets.Put(ModelKeySecretName, m.Key)
	if err != nil {
		return nil, fmt.Errorf("model api: store the key: %w", err)
	}
	p := map[string]string{"ModelApiUrl": m.URL, "ModelApiKeySecretArn": arn}
	if m.Header != "" {
		p["ModelApiAuthHeader"] = m.Header
	}
	for k, v := range m.Params {
		p[k] = v
	}
	return p, nil
}
