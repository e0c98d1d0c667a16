"""Training jobs: the request and record (`spec`), their Redis store, the backends that run them
(`ray_jobs` for a local or remote Ray cluster, `kuberay` for a RayJob on Kubernetes), and the
service that ties them together and reconciles records with the backend."""
