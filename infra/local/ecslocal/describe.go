package ecslocal

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"
)

// clusterLocked resolves a cluster name or ARN; ECS assumes "default" when none is given.
func (s *Server) clusterLocked(ref *string) (string, *APIError) {
	name := cmpOr(deref(ref), DefaultCluster)
	if rest, ok := strings.CutPrefix(name, "arn:"); ok {
		// arn:aws:ecs:<region>:<account>:cluster/<name>
		parts := strings.SplitN(rest, ":", 5)
		n, isCluster := "", false
		if len(parts) == 5 && parts[1] == "ecs" && parts[2] == s.region && parts[3] == s.account {
			n, isCluster = strings.CutPrefix(parts[4], "cluster/")
		}
		if !isCluster {
			return "", apiErr(ClusterNotFoundException, "Cluster not found.")
		}
		name = n
	}
	if !s.clusters[name] {
		return "", apiErr(ClusterNotFoundException, "Cluster not found.")
	}
	return name, nil
}

// taskIDOf extracts the task id from an id or ARN (arn:aws:ecs:<region>:<account>:
// task/<cluster>/<id>), and reports the cluster the ARN names ("" for a bare id).
func (s *Server) taskIDOf(ref string) (id, cluster string, ok bool) {
	if rest, isARN := strings.CutPrefix(ref, "arn:"); isARN {
		parts := strings.SplitN(rest, ":", 5)
		if len(parts) != 5 || parts[1] != "ecs" || parts[2] != s.region || parts[3] != s.account {
			return "", "", false
		}
		path, isTask := strings.CutPrefix(parts[4], "task/")
		if !isTask {
			return "", "", false
		}
		cluster, id, _ = strings.Cut(path, "/")
		if id == "" { // the old format, task/<id>
			cluster, id = "", cluster
		}
		ref = id
	}
	if len(ref) != 32 || strings.Trim(ref, "0123456789abcdef") != "" {
		return "", "", false
	}
	return ref, cluster, true
}

// findLocked returns the task ref names in cluster, if ECS still knows it.
func (s *Server) findLocked(cluster, ref string) (*task, bool) {
	id, inCluster, ok := s.taskIDOf(ref)
	if !ok || (inCluster != "" && inCluster != cluster) {
		return nil, false
	}
	t, ok := s.tasks[id]
	if !ok || t.cluster != cluster {
		return nil, false
	}
	return t, true
}

// purgeLocked forgets tasks stopped longer ago than the retention, and tokens past their
// TTL or whose tasks are forgotten.
func (s *Server) purgeLocked(now time.Time) {
	for id, t := range s.tasks {
		if t.lastStatus == statusStopped && now.Sub(t.stoppedAt) > s.retain {
			delete(s.tasks, id)
		}
	}
	for k, e := range s.tokens {
		gone := slices.ContainsFunc(e.taskIDs, func(id string) bool { return s.tasks[id] == nil })
		if gone || now.Sub(e.at) > DefaultTokenTTL {
			delete(s.tokens, k)
		}
	}
}

func (s *Server) describeTasks(in *DescribeTasksRequest) (any, *APIError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(time.Now())
	cluster, e := s.clusterLocked(in.Cluster)
	if e != nil {
		return nil, e
	}
	if len(in.Tasks) == 0 {
		return nil, invalid("Tasks cannot be empty.")
	}
	if len(in.Tasks) > 100 {
		return nil, invalid("Tasks can have at most 100 items.")
	}
	withTags := slices.Contains(in.Include, "TAGS")
	out := describeTasksResponse{Tasks: []wireTask{}, Failures: []wireFailure{}}
	for _, ref := range in.Tasks {
		t, ok := s.findLocked(cluster, ref)
		if !ok {
			out.Failures = append(out.Failures, wireFailure{Arn: s.taskARNFor(cluster, ref), Reason: "MISSING"})
			continue
		}
		out.Tasks = append(out.Tasks, s.wireLocked(t, withTags))
	}
	return out, nil
}

// taskARNFor is the ARN a failure names: the reference itself unless it is a bare id.
func (s *Server) taskARNFor(cluster, ref string) string {
	if strings.HasPrefix(ref, "arn:") {
		return ref
	}
	return "arn:aws:ecs:" + s.region + ":" + s.account + ":task/" + cluster + "/" + ref
}

func (s *Server) stopTask(in *StopTaskRequest) (any, *APIError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(time.Now())
	cluster, e := s.clusterLocked(in.Cluster)
	if e != nil {
		return nil, e
	}
	ref := deref(in.Task)
	if ref == "" {
		return nil, invalid("Task can not be blank.")
	}
	reason := deref(in.Reason)
	if len(reason) > 255 {
		return nil, invalid("Reason can have at most 255 characters.")
	}
	if _, _, ok := s.taskIDOf(ref); !ok {
		return nil, invalid("Task Identifier is invalid")
	}
	t, ok := s.findLocked(cluster, ref)
	if !ok {
		return nil, invalid("The referenced task was not found.")
	}
	s.requestStopLocked(t, time.Now(), stopUser, cmpOr(reason, reasonUserDefault))
	return stopTaskResponse{Task: s.wireLocked(t, false)}, nil
}

// listKey orders tasks for ListTasks as sortedTasksLocked does; a nextToken encodes the
// key of the last task returned.
func listKey(t *task) string { return fmt.Sprintf("%020d %s", t.createdAt.UnixNano(), t.id) }

func (s *Server) listTasks(in *ListTasksRequest) (any, *APIError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(time.Now())
	cluster, e := s.clusterLocked(in.Cluster)
	if e != nil {
		return nil, e
	}
	if in.StartedBy != nil && (in.Family != nil || in.ServiceName != nil || in.ContainerInstance != nil) {
		return nil, invalid("startedBy must be the only filter when it is given.")
	}
	desired := cmpOr(in.DesiredStatus, statusRunning)
	switch desired {
	case statusRunning, statusPending, statusStopped:
	default:
		return nil, invalid("desiredStatus %q is not one of RUNNING, PENDING, STOPPED.", in.DesiredStatus)
	}
	limit := 100
	if in.MaxResults != nil {
		limit = int(*in.MaxResults)
		if limit < 1 || limit > 100 {
			return nil, invalid("maxResults must be between 1 and 100.")
		}
	}
	var after string
	if tok := deref(in.NextToken); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || !strings.Contains(string(b), " ") {
			return nil, invalid("Invalid nextToken.")
		}
		after = string(b)
	}
	out := listTasksResponse{TaskArns: []string{}}
	for _, t := range s.sortedTasksLocked() {
		switch {
		case t.cluster != cluster, t.desiredStatus != desired,
			in.StartedBy != nil && t.startedBy != *in.StartedBy,
			in.Family != nil && t.def.family != *in.Family,
			in.ServiceName != nil, in.ContainerInstance != nil, // no services or instances on Fargate here
			in.LaunchType != "" && in.LaunchType != t.launchType:
			continue
		}
		if after != "" && listKey(t) <= after {
			continue
		}
		if len(out.TaskArns) == limit {
			out.NextToken = base64.RawURLEncoding.EncodeToString([]byte(listKey(s.tasks[lastID(out.TaskArns)])))
			break
		}
		out.TaskArns = append(out.TaskArns, t.arn)
	}
	return out, nil
}

func lastID(arns []string) string {
	last := arns[len(arns)-1]
	return last[strings.LastIndex(last, "/")+1:]
}

func (s *Server) listTagsForResource(in *ListTagsForResourceRequest) (any, *APIError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(time.Now())
	arn := deref(in.ResourceArn)
	if arn == "" {
		return nil, invalid("resourceArn can not be blank.")
	}
	if _, _, ok := s.taskIDOf(arn); ok && strings.HasPrefix(arn, "arn:") {
		for _, t := range s.tasks {
			if t.arn == arn {
				return listTagsResponse{Tags: append([]Tag{}, t.tags...)}, nil
			}
		}
		return nil, invalid("The specified task is stopped or not found.")
	}
	if strings.Contains(arn, ":cluster/") {
		if _, e := s.clusterLocked(&arn); e != nil {
			return nil, e
		}
		return listTagsResponse{Tags: []Tag{}}, nil
	}
	if strings.Contains(arn, ":task-definition/") {
		if d, ok := s.resolveDefLocked(arn); ok {
			return listTagsResponse{Tags: tagList(d.tags)}, nil
		}
		return nil, apiErr(ClientException, "Unable to describe task definition.")
	}
	return nil, invalid("The ARN %q is not a task, cluster or task definition of this account and region.", arn)
}

func (s *Server) describeTaskDefinition(in *DescribeTaskDefinitionRequest) (any, *APIError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := deref(in.TaskDefinition)
	if ref == "" {
		return nil, invalid("TaskDefinition can not be blank.")
	}
	d, ok := s.resolveDefLocked(ref)
	if !ok {
		return nil, apiErr(ClientException, "Unable to describe task definition.")
	}
	out := describeTaskDefinitionResponse{TaskDefinition: d.wire()}
	if slices.Contains(in.Include, "TAGS") {
		out.Tags = tagList(d.tags)
	}
	return out, nil
}
