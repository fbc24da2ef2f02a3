// Runs DynamoDB Local like its own ServerRunner.main, but listening on one address
// (127.0.0.1 unless -Dsandgate.host says otherwise): DynamoDB Local 3.x has no host
// option and otherwise listens on every interface. Java 11+ runs this file directly
// (`java -cp DynamoDBLocal.jar LoopbackLauncher.java <DynamoDB Local arguments>`); the
// JRE's module image already carries the compiler the source launcher uses.
//
// Telemetry: main() here never calls Telemetry.configureTelemetry, so none is sent,
// and the Go side passes -disableTelemetry as well.

import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public class LoopbackLauncher {
    public static void main(String[] args) throws Exception {
        String host = System.getProperty("sandgate.host", "127.0.0.1");
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        // The Jetty server is private and built with new Server(port), which binds the
        // wildcard address; its one connector can still be moved before start().
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server server = (Server) field.get(proxy);
        Connector[] connectors = server.getConnectors();
        if (connectors.length == 0) {
            throw new IllegalStateException("DynamoDB Local has no connector to bind");
        }
        for (Connector c : connectors) {
            ((ServerConnector) c).setHost(host);
        }
        proxy.start();
        System.out.println("sandgate: DynamoDB Local listening on " + host);
    }
}
