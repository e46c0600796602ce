package config

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// k8s is the part of the manifests the test reads.
type k8s struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		MaxUnavailable int `yaml:"maxUnavailable"`
		Template       struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
				Containers                    []container `yaml:"containers"`
				Volumes                       []struct {
					Name      string `yaml:"name"`
					ConfigMap struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
					Secret struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type container struct {
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env            []envVar `yaml:"env"`
	ReadinessProbe probe    `yaml:"readinessProbe"`
	LivenessProbe  probe    `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type envVar struct {
	Name      string `yaml:"name"`
	ValueFrom struct {
		SecretKeyRef struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

// deployedConfig loads the ConfigMap's qfence.yaml as qfence would in the
// pod: its files (zones, keys) written where the volumes put them (under
// dir), its secrets from the Secret through the environment.
func deployedConfig(t *testing.T, docs map[string]*k8s, mounts map[string]string) *Config {
	t.Helper()
	dir := t.TempDir()
	text := docs["ConfigMap"].Data["qfence.yaml"]
	for mount, volume := range mounts {
		src := docs["ConfigMap"].Data
		if volume == "keys" {
			src = docs["Secret"].StringData
		}
		target := filepath.Join(dir, strings.ReplaceAll(mount, "/", "_"))
		if err := os.MkdirAll(target, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range src {
			if err := os.WriteFile(filepath.Join(target, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		text = strings.ReplaceAll(text, mount+"/", target+"/")
	}
	path := filepath.Join(dir, "qfence.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var env []string
	for k, v := range docs["Secret"].StringData {
		if strings.HasPrefix(k, "QFENCE_") {
			env = append(env, k+"="+v)
		}
	}
	c, err := Load(path, env)
	if err != nil {
		t.Fatalf("the ConfigMap's configuration, with the Secret's variables, is refused: %v", err)
	}
	return c
}

// The Kubernetes manifests and the systemd unit under config/deploy hold
// to the real configuration: the configuration loads with the Secret's
// variables, the probes are /readyz and /healthz on metrics.listen's port,
// the pod has more time to stop than shutdown_timeout, the budget and the
// Deployment select the same pods, and the unit runs the daemon with the
// same file and stops it as gently.
func TestTheDeploymentsHoldToTheConfiguration(t *testing.T) {
	raw, err := os.ReadFile("deploy/kubernetes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]*k8s{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var d k8s
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		docs[d.Kind] = &d
	}
	for _, kind := range []string{"ConfigMap", "Secret", "Deployment", "PodDisruptionBudget"} {
		if docs[kind] == nil {
			t.Fatalf("no %s in deploy/kubernetes.yaml", kind)
		}
	}
	dep := docs["Deployment"]
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	ctr := pod.Containers[0]
	volumes := map[string]string{} // volume name → what it holds
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap.Name == docs["ConfigMap"].Metadata.Name:
			volumes[v.Name] = "config"
		case v.Secret.SecretName == docs["Secret"].Metadata.Name:
			volumes[v.Name] = "keys"
		}
	}
	mounts := map[string]string{}
	for _, m := range ctr.VolumeMounts {
		mounts[m.MountPath] = volumes[m.Name]
	}
	if len(ctr.Args) != 3 || ctr.Args[0] != "run" || ctr.Args[1] != "--config" || mounts[filepath.Dir(ctr.Args[2])] != "config" {
		t.Fatalf("args %v, mounts %v: want run --config with the file from the ConfigMap's volume", ctr.Args, mounts)
	}
	cfg := deployedConfig(t, docs, mounts)

	_, port, err := net.SplitHostPort(cfg.Metrics.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]int{}
	for _, p := range ctr.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, p := range []struct {
		what string
		pr   probe
		path string
	}{{"readiness", ctr.ReadinessProbe, "/readyz"}, {"liveness", ctr.LivenessProbe, "/healthz"}} {
		if p.pr.HTTPGet.Path != p.path || strconv.Itoa(ports[p.pr.HTTPGet.Port]) != port {
			t.Errorf("%s probe %+v (ports %v), want %s on metrics.listen's port %s", p.what, p.pr.HTTPGet, ports, p.path, port)
		}
	}
	if host, _, _ := net.SplitHostPort(cfg.Metrics.Listen); host == "127.0.0.1" || host == "localhost" {
		t.Errorf("metrics.listen %s: the kubelet cannot probe a loopback address", cfg.Metrics.Listen)
	}
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= cfg.ShutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds %s is not more than shutdown_timeout %s: the kubelet kills a draining qfence", grace, cfg.ShutdownTimeout)
	}
	for _, e := range ctr.Env {
		ref := e.ValueFrom.SecretKeyRef
		if ref.Name != docs["Secret"].Metadata.Name || docs["Secret"].StringData[ref.Key] == "" {
			t.Errorf("env %s comes from %s/%s, which the Secret does not hold", e.Name, ref.Name, ref.Key)
		}
	}
	for k := range docs["Secret"].StringData {
		if strings.HasPrefix(k, "QFENCE_") && !slices.ContainsFunc(ctr.Env, func(e envVar) bool { return e.Name == k }) {
			t.Errorf("the Secret's %s reaches no container", k)
		}
	}
	if ctr.Resources.Requests["cpu"] == "" || ctr.Resources.Requests["memory"] == "" {
		t.Errorf("resource requests %v: the scheduler needs both (README, Scaling out)", ctr.Resources.Requests)
	}
	pdb := docs["PodDisruptionBudget"]
	if !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, dep.Spec.Selector.MatchLabels) ||
		!reflect.DeepEqual(dep.Spec.Selector.MatchLabels, dep.Spec.Template.Metadata.Labels) || pdb.Spec.MaxUnavailable != 1 {
		t.Errorf("the budget selects %v (max unavailable %d), the Deployment %v of pods labelled %v", pdb.Spec.Selector.MatchLabels,
			pdb.Spec.MaxUnavailable, dep.Spec.Selector.MatchLabels, dep.Spec.Template.Metadata.Labels)
	}

	unit := systemdUnit(t, "deploy/qfence.service")
	exec := strings.Fields(unit["ExecStart"])
	if len(exec) != 4 || filepath.Base(exec[0]) != "qfence" || exec[1] != "run" || exec[2] != "--config" || exec[3] != ctr.Args[2] {
		t.Errorf("ExecStart %q, want qfence run --config %s", unit["ExecStart"], ctr.Args[2])
	}
	if stop, err := strconv.Atoi(unit["TimeoutStopSec"]); err != nil || time.Duration(stop)*time.Second <= cfg.ShutdownTimeout {
		t.Errorf("TimeoutStopSec %q is not more than shutdown_timeout %s", unit["TimeoutStopSec"], cfg.ShutdownTimeout)
	}
	if unit["KillSignal"] != "SIGTERM" || !strings.Contains(unit["ExecReload"], "-HUP") || unit["EnvironmentFile"] == "" {
		t.Errorf("unit %v: want SIGTERM to stop, SIGHUP to reload the zones, the secrets from an EnvironmentFile", unit)
	}
}

// systemdUnit reads a unit's key=value lines (sections flattened).
func systemdUnit(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
