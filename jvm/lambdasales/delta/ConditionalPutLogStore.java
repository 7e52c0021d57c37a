/*
 * A Delta LogStore for S3 (s3a://) that creates each commit file with a conditional PUT
 * (If-None-Match: *): the store itself refuses a second writer of the same version, whichever
 * process or engine it is. delta-rs 1.x commits to S3 the same way, so Spark jobs on several
 * drivers and delta-rs writers can share a table without DynamoDB.
 *
 * Delta's own S3SingleDriverLogStore only checks for the file and then writes it: two drivers
 * racing for one version can both "win", and one commit silently replaces the other. Hadoop
 * 3.5's S3A exposes S3's conditional create through createFile() (HADOOP-19256,
 * fs.option.create.conditional.overwrite): the PUT is made when the stream is closed and fails
 * with 412 when the key exists. Delta expects java.nio.file.FileAlreadyExistsException then,
 * and retries the commit as the next version after checking for conflicts.
 *
 * Overwrites (checkpoints, _last_checkpoint) stay plain PUTs; listing and reading are Hadoop's
 * (S3 lists and reads its writes consistently since December 2020).
 */
package lambdasales.delta;

import io.delta.storage.HadoopFileSystemLogStore;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FSDataOutputStreamBuilder;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

public class ConditionalPutLogStore extends HadoopFileSystemLogStore {
  /** Hadoop's createFile() option: write only if no object exists at the path. */
  public static final String CONDITIONAL_OVERWRITE = "fs.option.create.conditional.overwrite";
  /** S3A's createFile() option: skip the existence probes before the write. */
  public static final String CREATE_PERFORMANCE = "fs.s3a.create.performance";

  public ConditionalPutLogStore(Configuration initHadoopConf) {
    super(initHadoopConf);
  }

  @Override
  public void write(
      Path path, Iterator<String> actions, Boolean overwrite, Configuration hadoopConf)
      throws IOException {
    FileSystem fs = path.getFileSystem(hadoopConf);
    if (overwrite) {
      try (FSDataOutputStream out = fs.create(path, true)) {
        writeLines(out, actions);
      }
      return;
    }
    FSDataOutputStream out;
    try {
      FSDataOutputStreamBuilder<?, ?> builder = fs.createFile(path);
      builder.overwrite(false);
      builder.must(CONDITIONAL_OVERWRITE, true);
      // No HEAD/LIST before the PUT: the condition is the check, made by the store at once.
      builder.opt(CREATE_PERFORMANCE, true);
      out = (FSDataOutputStream) builder.build();
    } catch (org.apache.hadoop.fs.FileAlreadyExistsException e) {
      throw alreadyExists(path, e);
    }
    try {
      writeLines(out, actions);
    } catch (IOException | RuntimeException e) {
      out.abort();
      throw e;
    }
    try {
      out.close(); // the conditional PUT
    } catch (IOException e) {
      if (isPreconditionFailure(e)) {
        throw alreadyExists(path, e);
      }
      throw e;
    }
  }

  private static void writeLines(FSDataOutputStream out, Iterator<String> actions)
      throws IOException {
    while (actions.hasNext()) {
      out.write((actions.next() + "\n").getBytes(StandardCharsets.UTF_8));
    }
  }

  /** A 412 (or S3A's translation of it): another writer created the key first. */
  static boolean isPreconditionFailure(Throwable e) {
    for (Throwable t = e; t != null; t = t.getCause()) {
      if (t instanceof org.apache.hadoop.fs.FileAlreadyExistsException
          || t instanceof java.nio.file.FileAlreadyExistsException) {
        return true;
      }
      String name = t.getClass().getSimpleName();
      String message = String.valueOf(t.getMessage());
      if (name.equals("RemoteFileChangedException")
          || message.contains("412")
          || message.contains("PreconditionFailed")) {
        return true;
      }
    }
    return false;
  }

  private static java.nio.file.FileAlreadyExistsException alreadyExists(Path path, Exception e) {
    java.nio.file.FileAlreadyExistsException error =
        new java.nio.file.FileAlreadyExistsException(path.toString());
    error.initCause(e);
    return error;
  }

  @Override
  public Boolean isPartialWriteVisible(Path path, Configuration hadoopConf) {
    return false; // an S3 object appears whole or not at all
  }
}
