// Creates ACLs with Kafka's Admin API, for deploy/local-kafka/kafka.sh (run as a single-file
// source program: java -cp "libs/*" Acls.java CLIENT_PROPERTIES < ACL lines). The jars from
// Maven Central hold no kafka-acls tool, and this needs nothing else.
//
// One ACL per input line, allowing from any host:
//   PRINCIPAL OPERATION RESOURCE_TYPE PATTERN_TYPE NAME
//   User:lensnet READ TOPIC PREFIXED kmtnet.photometry.

import java.io.BufferedReader;
import java.io.FileReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Acls {
  public static void main(String[] args) throws Exception {
    Properties config = new Properties();
    try (FileReader file = new FileReader(args[0])) {
      config.load(file);
    }
    List<AclBinding> bindings = new ArrayList<>();
    BufferedReader input = new BufferedReader(new InputStreamReader(System.in));
    for (String line = input.readLine(); line != null; line = input.readLine()) {
      String[] f = line.trim().split("\\s+");
      if (f.length != 5) {
        throw new IllegalArgumentException("expected 5 fields, got: " + line);
      }
      bindings.add(
          new AclBinding(
              new ResourcePattern(ResourceType.valueOf(f[2]), f[4], PatternType.valueOf(f[3])),
              new AccessControlEntry(
                  f[0], "*", AclOperation.valueOf(f[1]), AclPermissionType.ALLOW)));
    }
    try (Admin admin = Admin.create(config)) {
      admin.createAcls(bindings).all().get(60, TimeUnit.SECONDS);
    }
    for (AclBinding binding : bindings) {
      System.out.println(binding);
    }
  }
}
