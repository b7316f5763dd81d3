package harness

import (
	admissionv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// WithValidatingWebhooks installs the ValidatingWebhookConfigurations with envtest once the API
// server is up: each webhook's clientConfig.service.path is turned into a URL on a reserved
// 127.0.0.1 port, and its caBundle into the CA of serving certificates envtest generates. Serve
// them with a webhook server built from Kube.WebhookServerOptions. The API server calls the
// webhooks as soon as they are installed, so give them failurePolicy: Fail only if the test
// waits for its server before sending matching requests.
func WithValidatingWebhooks(configs ...*admissionv1.ValidatingWebhookConfiguration) KubeOption {
	return func(c *kubeConfig) {
		c.envHooks = append(c.envHooks, func(t TB, env *envtest.Environment) {
			o := &env.WebhookInstallOptions
			o.ValidatingWebhooks = append(o.ValidatingWebhooks, configs...)
			if o.LocalServingPort == 0 {
				o.LocalServingHost, o.LocalServingPort = "127.0.0.1", FreePort(t)
			}
		})
	}
}

// WebhookServerOptions returns the options of a controller-runtime webhook server that serves
// the webhooks installed by WithValidatingWebhooks: their address and the directory of the
// serving certificate (tls.crt, tls.key) the API server trusts.
func (k *Kube) WebhookServerOptions() webhook.Options {
	o := k.Env.WebhookInstallOptions
	return webhook.Options{Host: o.LocalServingHost, Port: o.LocalServingPort, CertDir: o.LocalServingCertDir}
}
