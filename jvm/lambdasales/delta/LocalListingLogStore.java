/*
 * Delta's LogStore for local paths (file://), with a listing that stays fast on a long log.
 *
 * Delta finds a table's state by listing its _delta_log from a version on (listFrom). Delta's
 * LocalLogStore lists through Hadoop's FileSystem.listStatus, which builds a FileStatus (a
 * qualified Path, parsed with regular expressions, and a stat) for every entry of the directory
 * and only then drops those before the start. A stream that commits once a second leaves about
 * 174,000 entries (commit and checksum files) in a day, kept for delta.logRetentionDuration
 * (30 days by default): measured, Hadoop's listing of such a log takes 10-14 s, a cold Spark
 * snapshot 23-33 s, while the names alone list in 0.2 s.
 *
 * This store lists the names (one readdir), keeps those at or after the start, sorts them, and
 * builds the FileStatus of each only when Delta reads it (Delta stops at the version it wants).
 * The result is Hadoop's, entry for entry: the same qualified paths and statuses, Hadoop's own
 * checksum side files (".name.crc") left out as its LocalFileSystem leaves them out, an entry
 * deleted between the listing and its status skipped as Hadoop skips it, and
 * FileNotFoundException when the directory does not exist.
 *
 * Reads go to Hadoop's raw local file system: they do not check the ".name.crc" side file
 * Hadoop's checksummed file system keeps beside each file Spark writes. Other writers of the
 * log (delta-rs writing its checkpoint) replace "_last_checkpoint" without that side file;
 * checked against it, the new file fails (ChecksumException), and Delta then retries three
 * times a second apart and lists the whole log for the newest checkpoint (measured on a day's
 * log: most of a cold read). Delta's log needs no such check: a commit is written whole or not
 * at all. Writes are LocalLogStore's.
 */
package lambdasales.delta;

import io.delta.storage.CloseableIterator;
import io.delta.storage.LineCloseableIterator;
import io.delta.storage.LocalLogStore;
import java.io.BufferedReader;
import java.io.File;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import java.nio.charset.StandardCharsets;
import java.util.NoSuchElementException;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;

public class LocalListingLogStore extends LocalLogStore {
  public LocalListingLogStore(Configuration initHadoopConf) {
    super(initHadoopConf);
  }

  @Override
  public CloseableIterator<String> read(Path path, Configuration hadoopConf) throws IOException {
    FileSystem fs = path.getFileSystem(hadoopConf);
    if (!(fs instanceof LocalFileSystem)) {
      return super.read(path, hadoopConf);
    }
    FileSystem raw = ((LocalFileSystem) fs).getRawFileSystem();
    return new LineCloseableIterator(
        new BufferedReader(new InputStreamReader(raw.open(path), StandardCharsets.UTF_8)));
  }

  @Override
  public Iterator<FileStatus> listFrom(Path path, Configuration hadoopConf) throws IOException {
    FileSystem fs = path.getFileSystem(hadoopConf);
    Path parent = path.getParent();
    File directory;
    boolean checksummed;
    if (fs instanceof LocalFileSystem) {
      directory = ((LocalFileSystem) fs).pathToFile(parent);
      checksummed = true;
    } else if (fs instanceof RawLocalFileSystem) {
      directory = ((RawLocalFileSystem) fs).pathToFile(parent);
      checksummed = false;
    } else {
      return super.listFrom(path, hadoopConf);
    }
    String[] names = directory.list();
    if (names == null) {
      if (!directory.isDirectory()) {
        throw new FileNotFoundException("No such file or directory: " + parent);
      }
      throw new IOException("Cannot list " + parent);
    }
    String start = path.getName();
    List<String> kept = new ArrayList<>();
    for (String name : names) {
      if (name.compareTo(start) >= 0 && !(checksummed && isHadoopChecksum(name))) {
        kept.add(name);
      }
    }
    Collections.sort(kept);
    return new Statuses(fs, parent, kept.iterator());
  }

  /** Hadoop's ChecksumFileSystem side file of a data file: ".<name>.crc". */
  private static boolean isHadoopChecksum(String name) {
    return name.startsWith(".") && name.endsWith(".crc");
  }

  /** The status of each kept name, read when it is reached; names gone meanwhile are skipped. */
  private static final class Statuses implements Iterator<FileStatus> {
    private final FileSystem fs;
    private final Path parent;
    private final Iterator<String> names;
    private FileStatus next;

    Statuses(FileSystem fs, Path parent, Iterator<String> names) {
      this.fs = fs;
      this.parent = parent;
      this.names = names;
    }

    @Override
    public boolean hasNext() {
      while (next == null && names.hasNext()) {
        try {
          next = fs.getFileStatus(new Path(parent, names.next()));
        } catch (FileNotFoundException gone) {
          // Deleted since the listing (the log's clean-up): Hadoop's listStatus skips it too.
        } catch (IOException e) {
          throw new UncheckedIOException(e);
        }
      }
      return next != null;
    }

    @Override
    public FileStatus next() {
      if (!hasNext()) {
        throw new NoSuchElementException();
      }
      FileStatus status = next;
      next = null;
      return status;
    }
  }
}
